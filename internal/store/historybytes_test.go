package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/store"
)

// Upgrading a database of the schema before the history's bytes were counted: the migration
// counts what the database holds, as the store would have counted it, and deletes the returns
// whose job is gone (no prune would reach them).
func TestPostgresUpgradeCountsHistoryBytes(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx := context.Background()
	s, err := store.OpenPostgres(ctx, url, masterKey.Pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, jid := range []string{"20260101000000000001-a", "20260101000000000002-b"} {
		if err := s.Jobs().PutJob(jobstore.Job{JID: jid, Kind: "ping", Minions: []string{"a", "b"}, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"a", "b"}[:i+1] {
			if _, err := s.Jobs().AddReturn(jobstore.Return{JID: jid, Minion: m, Data: []byte(`{"success":true}`), Sig: []byte{1}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	want, err := s.Jobs().HistoryBytes()
	if err != nil || want == 0 {
		t.Fatalf("history bytes %d %v", want, err)
	}
	s.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The database as the release before the count left it, with a return of a pruned job.
	if _, err := conn.Exec(ctx, `DROP TABLE return_bytes; ALTER TABLE jobs DROP COLUMN bytes;
		INSERT INTO returns (jid, minion, record) VALUES ('20250101000000000001-z', 'a', '\x7b7d');
		DELETE FROM schema_migrations WHERE version >= 4`); err != nil {
		t.Fatal(err)
	}
	s, err = store.OpenPostgres(ctx, url, masterKey.Pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Jobs().HistoryBytes(); err != nil || got != want {
		t.Fatalf("history bytes %d after the upgrade (%v), want %d", got, err, want)
	}
	var orphans int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM returns WHERE jid = '20250101000000000001-z'`).Scan(&orphans); err != nil || orphans != 0 {
		t.Fatalf("%d returns of a job that is gone after the upgrade (%v)", orphans, err)
	}
}
