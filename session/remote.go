package session

import "context"

type remoteKey struct{}

// WithRemote returns ctx carrying the client's address, for the lifecycle log lines of
// requests that have no attachment to take it from: negotiations, and requests that find
// their session expired. The transports set it on the contexts they pass to Negotiate and
// Verify.
func WithRemote(ctx context.Context, remote string) context.Context {
	return context.WithValue(ctx, remoteKey{}, remote)
}

// remoteOf returns the address WithRemote put in ctx, or "".
func remoteOf(ctx context.Context) string {
	s, _ := ctx.Value(remoteKey{}).(string)
	return s
}
