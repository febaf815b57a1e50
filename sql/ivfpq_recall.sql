-- ivfpq_estimate_recall: recall@k of an index against exact search, on
-- sampled rows of its own table; it falls when the data drift away from what
-- the index was trained on, and recovers when the index is retrained.
SELECT setseed(0.42);

-- day A: 20 tight clusters around (c, c, ..., c) * 3
CREATE TABLE drift (id int, e vector(16));
INSERT INTO drift SELECT i, ARRAY(SELECT (i % 20) * 3 + sin(i * d) FROM generate_series(1, 16) d)::vector
	FROM generate_series(1, 6000) i;
CREATE INDEX drift_idx ON drift USING ivfpq (e) WITH (lists = 40, m = 4);
ANALYZE drift;
SET ivfpq.probes = 2;
SET ivfpq.rerank = 20;
SELECT recall >= 0.9 AS trained_recall_high, sampled FROM ivfpq_estimate_recall('drift_idx', 60, 10);
SELECT recall AS recall_before FROM ivfpq_estimate_recall('drift_idx', 60, 10) \gset

-- the data shift: many more rows from clusters off the diagonal, in a
-- region the centroids and codebooks never saw
INSERT INTO drift SELECT i, ARRAY(SELECT (i % 20) * 3 * (1 - 2 * (d % 2)) + sin(i * d) FROM generate_series(1, 16) d)::vector
	FROM generate_series(6001, 30000) i;
ANALYZE drift;
SELECT recall AS recall_drifted FROM ivfpq_estimate_recall('drift_idx', 60, 10) \gset
SELECT :recall_drifted < :recall_before - 0.3 AS estimate_falls_under_drift;

-- retraining on the partition's own rows brings it back
REINDEX INDEX drift_idx;
SELECT recall AS recall_retrained FROM ivfpq_estimate_recall('drift_idx', 60, 10) \gset
SELECT :recall_retrained > :recall_drifted + 0.3 AS estimate_recovers;

-- all lists and a deep rerank: the index search is exact
SET ivfpq.probes = 40;
SET ivfpq.rerank = 1000;
SELECT recall AS exact_recall FROM ivfpq_estimate_recall('drift_idx', 20, 10);
RESET ivfpq.probes;
RESET ivfpq.rerank;

-- the function leaves the caller's planner settings alone
SET enable_seqscan = off;
SELECT sampled FROM ivfpq_estimate_recall('drift_idx', 5, 3);
SHOW enable_seqscan;
SHOW enable_indexscan;
RESET enable_seqscan;

-- errors
SELECT * FROM ivfpq_estimate_recall('drift', 10, 10);
SELECT * FROM ivfpq_estimate_recall('drift_idx', 0, 10);
SELECT * FROM ivfpq_estimate_recall('drift_idx', 10, 0);
CREATE TABLE lonely (e vector(2));
INSERT INTO lonely VALUES ('[1,1]');
CREATE INDEX lonely_idx ON lonely USING ivfpq (e);
SELECT * FROM ivfpq_estimate_recall('lonely_idx', 10, 10);

DROP TABLE drift, lonely;
