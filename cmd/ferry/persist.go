package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	ferrymemory "github.com/ferryrt/ferry/bridge/memory"
)

// loadState loads the broker's state from name, if the file exists. run removes the file
// once the node serves, so a state file is only ever the one a drain wrote.
func loadState(b *ferrymemory.Broker, name string) error {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	defer f.Close()
	if err := b.Load(f); err != nil {
		return fmt.Errorf("state file %s: %w (remove it to start afresh: clients then get a reset)", name, err)
	}
	return nil
}

// saveState writes the state next to name, private to this user (it holds messages), and
// renames it into place once on disk, so that a crash mid-write leaves no half state.
func saveState(b *ferrymemory.Broker, name string) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	err = b.Save(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state file: %w", err)
	}
	syncDir(filepath.Dir(name))
	return nil
}

// persistence is what run keeps between starts: the signing secret and where the
// in-memory broker's state goes.
type persistence struct {
	secret       string
	secretSource string // "flag", "data-dir" or "random"
	secretFile   string // with "data-dir"
	stateFile    string // "" for none
	unlock       func()
}

// openPersistence takes the data directory, if any, and decides the secret and the state
// file: --secret wins over the stored secret, --state-file over the data directory's.
func openPersistence(o *options, log *slog.Logger) (*persistence, error) {
	p := &persistence{secret: o.secret, secretSource: "flag", unlock: func() {}}
	if o.redisURL == "" {
		p.stateFile = o.stateFile
	}
	if o.dataDir != "" {
		dd, err := openDataDir(o.dataDir)
		switch {
		case err != nil && o.dataDirExplicit:
			return nil, fmt.Errorf("--data-dir %s: %w (every node needs its own; --data-dir none keeps nothing)", o.dataDir, err)
		case err != nil:
			log.Warn("the default data directory can't be used: sessions and history will not survive a restart; set --data-dir (FERRY_DATA_DIR), or --data-dir none to silence this",
				"dir", o.dataDir, "err", err)
		default:
			p.unlock = dd.unlock
			if dd.loosePerms() {
				log.Warn("the data directory can be read by other users: it holds the signing secret", "dir", dd.path)
			}
			if p.secret == "" {
				s, created, err := dd.secret()
				if err != nil {
					dd.unlock()
					return nil, fmt.Errorf("--data-dir: %w", err)
				}
				p.secret, p.secretSource, p.secretFile = s, "data-dir", filepath.Join(dd.path, secretFileName)
				if created {
					log.Info("generated a signing secret", "file", p.secretFile)
				}
			}
			if p.stateFile == "" && o.redisURL == "" {
				p.stateFile = dd.statePath()
			}
			log.Info("data directory", "dir", dd.path, "state_file", p.stateFile)
		}
	}
	if p.secret == "" {
		p.secretSource = "random"
	}
	return p, nil
}

func (p *persistence) close() { p.unlock() }

// logSecret says where the signing secret comes from and warns where it will hurt: a
// random one resets every client at each restart, and on several nodes (Redis) any
// secret but a shared one refuses the sessions of the other nodes.
func (p *persistence) logSecret(log *slog.Logger, cluster bool) {
	switch {
	case p.secretSource == "random" && cluster:
		log.Warn("no --secret and no data directory: this node signs sessions with a random key, which no other node shares: sessions that move between nodes are refused (4005) and every client resets at a restart; give every node the same --secret")
	case p.secretSource == "random":
		log.Warn("no --secret and no data directory: sessions are signed with a random key and do not survive a restart")
	case p.secretSource == "data-dir" && cluster:
		log.Warn("with --redis every node must sign sessions with the same secret, but this node uses the one generated in its data directory: sessions that move to a node with another secret are refused (4005) and reset; give every node the same --secret (for example this file's content), and compare secret_id across the nodes' logs",
			"file", p.secretFile, "secret_id", secretFingerprint(p.secret))
	default:
		log.Info("signing secret", "from", p.secretSource, "file", p.secretFile, "secret_id", secretFingerprint(p.secret))
	}
}

// removeState removes the state file of the in-memory broker memory (nil with --redis)
// once it is loaded and the node serves. The state now lives in the broker alone, until
// the drain writes it back (saveState). Were a crash to leave the file, the next start
// would load positions older than what clients have seen, and reuse offsets they hold for
// other messages: a silent gap. Without the file, a crash costs the new epochs of a fresh
// broker: an honest reset.
func (p *persistence) removeState(memory *ferrymemory.Broker) error {
	if memory == nil || p.stateFile == "" {
		return nil
	}
	if err := os.Remove(p.stateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

// saveState writes the state of the in-memory broker memory (nil with --redis) to the
// state file, if there is one, once the node has drained.
func (p *persistence) saveState(memory *ferrymemory.Broker, log *slog.Logger) error {
	if memory == nil || p.stateFile == "" {
		return nil
	}
	if err := saveState(memory, p.stateFile); err != nil {
		return err
	}
	log.Info("state saved", "file", p.stateFile)
	return nil
}
