/**
 * Full jitter (a uniform delay in [0, min(max, min·2^attempt)]): clients that lost the same
 * server spread their retries over the whole window instead of arriving in waves.
 */
export const fullJitter = (attempt, min, max, random) =>
  random() * Math.min(max, min * 2 ** attempt);

/**
 * Equal jitter (half fixed, half random) for background probes: a probe right after the
 * same transport failed its proof would only fail again, so the delay never drops below half
 * the window.
 */
export const equalJitter = (attempt, min, max, random) =>
  Math.min(max, min * 2 ** attempt) * (0.5 + random() / 2);
