package transport

import "testing"

func TestParseIOMode(t *testing.T) {
	for _, m := range []IOMode{IOPooled, IOPlain} {
		if got, err := ParseIOMode(m.String()); err != nil || got != m {
			t.Errorf("ParseIOMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	if _, err := ParseIOMode("epoll"); err == nil {
		t.Error(`ParseIOMode("epoll") accepted`)
	}
	if (Config{}).IO != IOPooled {
		t.Error("the zero Config is not pooled")
	}
}
