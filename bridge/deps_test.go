package bridge

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The bridge links no Redis client: a program on the in-memory broker does not carry
// go-redis, and the Redis broker (bridge/redis) stays an import of its own.
func TestBridgeLinksNoRedis(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/ferryrt/ferry/bridge").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || !slices.Contains(deps, "github.com/ferryrt/ferry/bridge/memory") {
		t.Fatalf("go list -deps listed %d packages, without bridge/memory: not the bridge's dependencies", len(deps))
	}
	for _, dep := range deps {
		if strings.Contains(dep, "redis") {
			t.Errorf("bridge depends on %s", dep)
		}
	}
}
