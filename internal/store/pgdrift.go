package store

import (
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/pki"
)

type pgDrifts struct{ s *Postgres }

// Bounds of one statement of PutDrifts: a round of thousands of minions is written in pieces.
const (
	driftRowsPerStatement  = 500
	driftBytesPerStatement = 8 << 20
)

// PutDrifts writes the checks in statements of at most driftRowsPerStatement rows and about
// driftBytesPerStatement bytes; each row is replaced only when the stored check is not newer,
// which ON CONFLICT evaluates on the row's newest version, so the newest check wins whichever
// master writes last. Every statement takes its rows' locks in minion order: two masters'
// rounds over the same minions in another order would deadlock (SQLSTATE 40P01).
func (d pgDrifts) PutDrifts(checks map[string]DriftCheck) error {
	if err := checkDrifts(checks); err != nil {
		return err
	}
	var ids []string
	var checked []time.Time
	var records [][]byte
	size := 0
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		ctx, cancel := d.s.ctx()
		defer cancel()
		_, err := d.s.pool.Exec(ctx, `INSERT INTO drift AS d (minion, checked, record)
			SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bytea[]) AS u(minion, checked, record)
			ORDER BY minion
			ON CONFLICT (minion) DO UPDATE SET checked = EXCLUDED.checked, record = EXCLUDED.record
			WHERE d.checked <= EXCLUDED.checked`, ids, checked, records)
		ids, checked, records, size = ids[:0], checked[:0], records[:0], 0
		return err
	}
	order := make([]string, 0, len(checks))
	for id := range checks {
		order = append(order, id)
	}
	slices.Sort(order)
	for _, id := range order {
		c := checks[id]
		ids, checked, records = append(ids, id), append(checked, c.Checked), append(records, c.Record)
		size += len(c.Record)
		if len(ids) >= driftRowsPerStatement || size >= driftBytesPerStatement {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

func (d pgDrifts) Drifts(minions []string) (map[string]DriftCheck, error) {
	out := map[string]DriftCheck{}
	if len(minions) == 0 {
		return out, nil
	}
	ctx, cancel := d.s.ctx()
	defer cancel()
	rows, err := d.s.pool.Query(ctx, `SELECT minion, checked, record FROM drift WHERE minion = ANY($1)`, minions)
	if err != nil {
		return nil, err
	}
	var id string
	var c DriftCheck
	_, err = pgx.ForEachRow(rows, []any{&id, &c.Checked, &c.Record}, func() error {
		// What is read back is checked like anything else: an id as the handshake checks it.
		if pki.ValidID(id) {
			out[id] = DriftCheck{Checked: c.Checked, Record: c.Record}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (d pgDrifts) DeleteDrift(minion string) error {
	ctx, cancel := d.s.ctx()
	defer cancel()
	_, err := d.s.pool.Exec(ctx, `DELETE FROM drift WHERE minion = $1`, minion)
	return err
}
