package store

// migrations are the PostgreSQL schema, one version per entry, applied in order at start and
// recorded in schema_migrations. Released entries never change: a change of schema is a new
// entry at the end.
var migrations = []string{
	// 1: everything of the first release.
	`
CREATE TABLE fleet (
	name  text PRIMARY KEY,
	value text NOT NULL
);
CREATE TABLE minion_keys (
	id        text PRIMARY KEY,
	key       text NOT NULL,
	state     text NOT NULL CHECK (state IN ('pending', 'accepted', 'rejected')),
	groups    text[] NOT NULL DEFAULT '{}',
	requested text[] NOT NULL DEFAULT '{}',
	source    text NOT NULL DEFAULT '',
	created   timestamptz NOT NULL,
	updated   timestamptz NOT NULL
);
CREATE INDEX minion_keys_pending ON minion_keys (source) WHERE state = 'pending';
CREATE TABLE denied_keys (
	id        text PRIMARY KEY,
	key       text NOT NULL,
	groups    text[] NOT NULL DEFAULT '{}',
	requested text[] NOT NULL DEFAULT '{}',
	source    text NOT NULL DEFAULT '',
	created   timestamptz NOT NULL,
	updated   timestamptz NOT NULL
);
CREATE TABLE tokens (
	hash    text PRIMARY KEY,
	id      text NOT NULL DEFAULT '',
	groups  text[] NOT NULL DEFAULT '{}',
	created timestamptz NOT NULL,
	expires timestamptz NOT NULL
);
CREATE TABLE jobs (
	jid    text PRIMARY KEY,
	record bytea NOT NULL
);
CREATE TABLE returns (
	jid      text NOT NULL,
	minion   text NOT NULL,
	record   bytea NOT NULL,
	PRIMARY KEY (jid, minion)
);
CREATE TABLE facts (
	minion text PRIMARY KEY,
	data   bytea NOT NULL
);
CREATE TABLE attested (
	minion text PRIMARY KEY,
	data   bytea NOT NULL
);
CREATE TABLE deliveries (
	jid       text PRIMARY KEY,
	signed    bytea,
	expires   timestamptz NOT NULL,
	published timestamptz NOT NULL
);
CREATE TABLE delivery_targets (
	jid         text NOT NULL REFERENCES deliveries ON DELETE CASCADE,
	minion      text NOT NULL,
	returned    boolean NOT NULL DEFAULT false,
	last_resend timestamptz,
	PRIMARY KEY (jid, minion)
);
CREATE INDEX delivery_targets_open ON delivery_targets (minion) WHERE NOT returned;
CREATE TABLE presence (
	minion text PRIMARY KEY,
	master text NOT NULL,
	until  timestamptz NOT NULL
);
`,
	// 2: schedule rounds (one master runs each round of a schedule).
	`
CREATE TABLE schedule_rounds (
	name    text PRIMARY KEY,
	round   bigint NOT NULL,
	master  text NOT NULL,
	claimed timestamptz NOT NULL,
	due     timestamptz NOT NULL,
	done    boolean NOT NULL DEFAULT false
);
`,
	// 3: each minion's last drift check (any master shows the fleet's drift).
	`
CREATE TABLE drift (
	minion  text PRIMARY KEY,
	checked timestamptz NOT NULL,
	record  bytea NOT NULL
);
`,
	// 4: the bytes of the job history, counted as it is written, for job_history_mb (Prune):
	// each job's record in jobs.bytes, its returns' records in return_bytes, one row per job and
	// writing master (so that masters recording returns of one job do not wait on one row).
	`
ALTER TABLE jobs ADD COLUMN bytes bigint NOT NULL DEFAULT 0;
UPDATE jobs SET bytes = octet_length(jid) + octet_length(record);
CREATE TABLE return_bytes (
	jid      text NOT NULL,
	instance text NOT NULL,
	bytes    bigint NOT NULL,
	PRIMARY KEY (jid, instance)
);
DELETE FROM returns r WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.jid = r.jid);
INSERT INTO return_bytes (jid, instance, bytes)
	SELECT jid, '', sum(octet_length(jid) + octet_length(minion) + octet_length(record)) FROM returns GROUP BY jid;
`,
}
