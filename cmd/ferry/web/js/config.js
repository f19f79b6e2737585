// Where the Ferry endpoints are: the server's --base. The pages are static files, so this is
// the default; a server with another --base serves this module itself with the real value.
export const BASE = '/ferry';
