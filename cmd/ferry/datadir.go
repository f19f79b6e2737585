package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The data directory keeps what a single node needs to survive a graceful restart without
// resetting its clients: the secret that signs session credentials (without it every
// credential of the previous run is forged in the eyes of the next) and the in-memory
// broker's state (channel epochs, history and sessions). docs/OPERATIONS.md, "Data
// directory", is the user's side of this.
const (
	secretFileName = "secret"
	stateFileName  = "state.json"
	lockFileName   = "lock"
)

// defaultDataDir is where the data directory lives when --data-dir is not given:
// $XDG_STATE_HOME/ferry, else $HOME/.local/state/ferry (the XDG base directory for state
// that outlives a restart), or none when neither variable names an absolute path. It is
// per user and independent of the working directory, so that the secret never lands in a
// source tree or a container's build context, and `go run` from any folder finds it.
func defaultDataDir(getenv func(string) string) string {
	if d := getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "ferry")
	}
	if h := getenv("HOME"); filepath.IsAbs(h) && h != "/" {
		return filepath.Join(h, ".local", "state", "ferry")
	}
	return ""
}

// dataDirOff reports whether a --data-dir value turns the data directory off.
func dataDirOff(v string) bool { return v == "" || strings.EqualFold(v, "none") }

// dataDir is an open data directory, locked against a second node using it.
type dataDir struct {
	path   string
	unlock func()
}

// openDataDir creates the directory (0700) if needed and takes its lock. A directory
// another ferry process holds is an error: two nodes would overwrite each other's state.
func openDataDir(path string) (*dataDir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, err
	}
	unlock, err := lockFile(filepath.Join(path, lockFileName))
	if err != nil {
		return nil, err
	}
	return &dataDir{path: path, unlock: unlock}, nil
}

// loosePerms reports whether the directory can be read by others than its owner.
func (d *dataDir) loosePerms() bool {
	fi, err := os.Stat(d.path)
	return err == nil && fi.Mode().Perm()&0o077 != 0
}

// statePath is the broker's state file in the directory.
func (d *dataDir) statePath() string { return filepath.Join(d.path, stateFileName) }

// secret returns the stored signing secret, generating it on first use. The file is
// written whole under a temporary name and linked into place, so that two processes
// starting at once agree on one secret and a crash never leaves a half-written one.
func (d *dataDir) secret() (secret string, created bool, err error) {
	name := filepath.Join(d.path, secretFileName)
	if s, err := readSecret(name); err == nil {
		return s, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	var b [32]byte
	rand.Read(b[:])
	tmp, err := os.CreateTemp(d.path, ".secret-*")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(tmp.Name())
	s := hex.EncodeToString(b[:])
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", false, err
	}
	if _, err := tmp.WriteString(s + "\n"); err != nil {
		tmp.Close()
		return "", false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", false, err
	}
	if err := tmp.Close(); err != nil {
		return "", false, err
	}
	// Link fails if the name exists: then the other process's secret is the one.
	if err := os.Link(tmp.Name(), name); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", false, err
	} else if err != nil {
		s, err := readSecret(name)
		return s, false, err
	}
	syncDir(d.path)
	return s, true, nil
}

// readSecret reads a secret file: one line of at least 32 characters.
func readSecret(name string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	s := string(bytes.TrimSpace(b))
	if len(s) < 32 || strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("%s: not a secret (want one line of at least 32 characters); remove it to have a new one generated, which resets every client once", name)
	}
	return s, nil
}

// secretFingerprint names a secret in logs without revealing it, so that operators can
// compare nodes: every node behind one Redis must show the same.
func secretFingerprint(secret string) string {
	h := sha256.Sum256([]byte("ferry secret fingerprint\x00" + secret))
	return hex.EncodeToString(h[:4])
}

// syncDir flushes a directory's entries (a rename or link into it) to disk, where the
// platform allows; failure only weakens durability after a power cut.
func syncDir(path string) {
	if f, err := os.Open(path); err == nil {
		f.Sync()
		f.Close()
	}
}
