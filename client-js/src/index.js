export { Ferry } from './ferry.js';
export { Subscription } from './subscription.js';
export { FerryError } from './errors.js';
export { isTerminal, shouldReconnect } from './reconnect.js';
