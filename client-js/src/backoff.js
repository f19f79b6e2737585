/**
 * The delay window of attempt n (from 0): min·2^n, capped at max.
 * @param {number} n @param {number} min @param {number} max
 */
const cap = (n, min, max) => Math.min(max, min * 2 ** n);

/**
 * Full jitter (a uniform delay in [0, min(max, min·2^attempt)]): clients that lost the same
 * server spread their retries over the whole window instead of arriving in waves.
 * @param {number} attempt @param {number} min @param {number} max @param {() => number} random
 */
export const fullJitter = (attempt, min, max, random) => random() * cap(attempt, min, max);

/**
 * Equal jitter (half fixed, half random) for background probes: a probe right after the
 * same transport failed its proof would only fail again, so the delay never drops below half
 * the window.
 * @param {number} attempt @param {number} min @param {number} max @param {() => number} random
 */
export const equalJitter = (attempt, min, max, random) => cap(attempt, min, max) * (0.5 + random() / 2);
