package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/store"
)

// The files store keeps drift checks across restarts in <data_dir>/drift.json, and reads the
// file as masters wrote it before the store kept drift (each minion's record, with its own
// "checked").
func TestFilesDriftsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	old := `{"web1":{"minion":"web1","schedule":"watch","jid":"j1","checked":"2026-11-30T10:00:00Z","drifted":true},` +
		`"../x":{"minion":"x","checked":"2026-11-30T10:00:00Z"}}`
	if err := os.WriteFile(filepath.Join(dir, "drift.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenFiles(dir, masterKey.Pub)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Drifts().Drifts([]string{"web1", "../x"})
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	if err != nil || len(got) != 1 || !got["web1"].Checked.Equal(at) || string(got["web1"].Record) != `{"minion":"web1","schedule":"watch","jid":"j1","checked":"2026-11-30T10:00:00Z","drifted":true}` {
		t.Fatalf("an older drift.json: %+v %v", got, err)
	}
	if err := s.Drifts().PutDrifts(map[string]store.DriftCheck{"db1": {Checked: at.Add(time.Hour), Record: []byte(`{"minion":"db1"}`)}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = store.OpenFiles(dir, masterKey.Pub)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err = s.Drifts().Drifts([]string{"web1", "db1"})
	if err != nil || len(got) != 2 || !got["db1"].Checked.Equal(at.Add(time.Hour)) || string(got["db1"].Record) != `{"minion":"db1"}` || !got["web1"].Checked.Equal(at) {
		t.Fatalf("after a restart: %+v %v", got, err)
	}
	// A file that is not JSON is no checks (the next round records them again), not a master
	// that cannot start.
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, "drift.json"), []byte("{nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = store.OpenFiles(dir, masterKey.Pub)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Drifts().Drifts([]string{"web1", "db1"}); err != nil || len(got) != 0 {
		t.Fatalf("a broken drift.json: %+v %v", got, err)
	}
}

// Upgrading a database of the previous schema (no drift table): the next start applies the
// drift migration and keeps what the database held.
func TestPostgresUpgradeAddsDrift(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx := context.Background()
	s, err := store.OpenPostgres(ctx, url, masterKey.Pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Attested().Update("web1", func([]byte) ([]byte, error) { return []byte(`{"a":1}`), nil }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The database as the release before drift left it (and before the later migrations).
	if _, err := conn.Exec(ctx, `DROP TABLE drift; DROP TABLE return_bytes; ALTER TABLE jobs DROP COLUMN bytes;
		DELETE FROM schema_migrations WHERE version >= 3`); err != nil {
		t.Fatal(err)
	}
	s, err = store.OpenPostgres(ctx, url, masterKey.Pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v int
	if err := conn.QueryRow(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil || v != store.SchemaVersion() {
		t.Fatalf("schema version %d after the upgrade, %v", v, err)
	}
	if a, err := s.Attested().Get("web1"); err != nil || string(a) != `{"a":1}` {
		t.Fatalf("attested after the upgrade: %s %v", a, err)
	}
	if err := s.Drifts().PutDrifts(map[string]store.DriftCheck{"web1": {Checked: time.Now(), Record: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
}
