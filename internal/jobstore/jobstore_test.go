package jobstore

import (
	"path/filepath"
	"testing"
	"time"
)

func TestBoltStore(t *testing.T) {
	p := filepath.Join(t.TempDir(), "master.db")
	s, err := OpenBolt(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, jid := range []string{"20260101000000000001", "20260101000000000002"} {
		if err := s.PutJob(Job{JID: jid, Minions: []string{"a", "b"}, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	r := Return{JID: "20260101000000000002", Minion: "a", Data: []byte("{}")}
	if added, err := s.AddReturn(r); !added || err != nil {
		t.Fatalf("first return: %v %v", added, err)
	}
	if added, _ := s.AddReturn(r); added {
		t.Fatal("a (job, minion) recorded twice")
	}
	s.PutFacts("a", []byte(`{"os":"linux"}`))
	s.Close()

	s, err = OpenBolt(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	jobs, _ := s.Jobs(10)
	if len(jobs) != 2 || jobs[0].JID != "20260101000000000002" {
		t.Fatalf("jobs after reopen: %+v", jobs)
	}
	rs, _ := s.Returns("20260101000000000002")
	if len(rs) != 1 || rs[0].Minion != "a" {
		t.Fatalf("returns: %+v", rs)
	}
	if rs, _ := s.Returns("20260101000000000001"); len(rs) != 0 {
		t.Fatal("returns leak across jobs")
	}
	if _, err := s.Job("nope"); err != ErrNotFound {
		t.Fatal(err)
	}
	f, _ := s.AllFacts()
	if string(f["a"]) != `{"os":"linux"}` {
		t.Fatal("facts lost")
	}
}
