// Package session is a Ferry session, independent of how its frames travel and of where
// its messages come from. It owns:
//
//   - credentials: the signed, self-contained token of a session (Signer, Claims) and the
//     session ids in it (random UUIDs; the signing key stays raw CSPRNG bytes);
//   - subscriptions and positions: per attachment, a Stream holds the channels a client
//     reads, resumes each from its Position (history first, then live, with nothing
//     falling between) and tells the client where it is (Cursor);
//   - the upstream sequence and its dedupe: each send or pub frame of a client is
//     processed at most once per DedupeKey and seq, and a duplicate is answered as its
//     first attempt was (Manager.Upstream);
//   - the bounded outbound queue of every attachment, which closes a slow consumer with a
//     resumable code, and each frame encoded once for all its readers;
//   - heartbeats and liveness: pings, the session's TTL in the shared Store, token expiry
//     and revocation;
//   - close reasons: the table of close codes (Codes) and *Error, which every layer
//     passes on unchanged. How a code is answered over HTTP is internal/httpx's.
//
// A Manager runs the sessions of one node; it needs a Store (shared session state), a
// Source (messages and history) and a Handler (authorization and upstream frames), which
// bridge provides. Transports drive it through the methods transport.Sessions lists.
// Its settings and their defaults (the Default* constants) are Config's; bridge.Config
// passes them through.
package session
