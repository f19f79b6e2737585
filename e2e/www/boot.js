// Classic script added before the harness module: catches a module that fails to load (for
// example when the server does not serve /ferry/client.js) so the test can say why.
window.e2eBoot = { errors: [] };
window.addEventListener('error', (e) => {
  window.e2eBoot.errors.push(String(e.message || (e.target && e.target.src) || e.type));
}, true);
window.addEventListener('unhandledrejection', (e) => {
  window.e2eBoot.errors.push('unhandled rejection: ' + String(e.reason && (e.reason.stack || e.reason)));
});
