-- codebooks_from: a new index copies the centroids and PQ codebooks of a
-- trained ivfpq index instead of training, so an empty table (today's
-- partition) has a trained index from its first row.
SET client_min_messages = notice;

CREATE TABLE day1 (id int, e vector(16));
INSERT INTO day1 SELECT i, ARRAY(SELECT (i % 20) * 3 + sin(i * d) FROM generate_series(1, 16) d)::vector
	FROM generate_series(1, 4000) i;
CREATE INDEX day1_idx ON day1 USING ivfpq (e) WITH (lists = 20, m = 8);

-- an empty table gets a trained, inherited index: no NOTICE about training
CREATE TABLE day2 (id int, e vector(16));
CREATE INDEX day2_idx ON day2 USING ivfpq (e) WITH (codebooks_from = 'day1_idx');
SELECT lists, m, rows, trained, inherited, training_rows > 0 AS has_training_rows
	FROM ivfpq_index_stats('day2_idx');
SELECT lists, m, trained, inherited FROM ivfpq_index_stats('day1_idx');

-- rows inserted now are encoded at once and found through the index
INSERT INTO day2 SELECT i, ARRAY(SELECT (i % 20) * 3 + cos(i * d) FROM generate_series(1, 16) d)::vector
	FROM generate_series(1, 2000) i;
SELECT rows FROM ivfpq_index_stats('day2_idx');
SET enable_seqscan = off;
SET ivfpq.probes = 3;
-- recall@10 of the index against exact search, for 20 of day2's own rows
CREATE FUNCTION day2_recall() RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
	hits int := 0;
	q record;
	approx int[];
	exact int[];
BEGIN
	FOR q IN SELECT e FROM day2 WHERE id % 100 = 1 LOOP
		EXECUTE 'SELECT array_agg(id) FROM (SELECT id FROM day2 ORDER BY e <-> $1 LIMIT 10) s'
			INTO approx USING q.e;
		SET LOCAL enable_indexscan = off;
		SET LOCAL enable_seqscan = on;
		EXECUTE 'SELECT array_agg(id) FROM (SELECT id FROM day2 ORDER BY e <-> $1 LIMIT 10) s'
			INTO exact USING q.e;
		SET LOCAL enable_indexscan = on;
		SET LOCAL enable_seqscan = off;
		hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
	END LOOP;
	RETURN hits / 200.0;
END $$;
SELECT day2_recall() >= 0.9 AS inherited_recall_ok;
EXPLAIN (COSTS OFF) SELECT id FROM day2 ORDER BY e <-> '[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]' LIMIT 3;
RESET ivfpq.probes;
RESET enable_seqscan;

-- the source may go away: the copy is independent
CREATE TABLE day0 (id int, e vector(16));
INSERT INTO day0 SELECT * FROM day1 WHERE id <= 1000;
CREATE INDEX day0_idx ON day0 USING ivfpq (e) WITH (lists = 20, m = 8);
CREATE TABLE day0_copy (id int, e vector(16));
CREATE INDEX day0_copy_idx ON day0_copy USING ivfpq (e) WITH (codebooks_from = 'public.day0_idx');
DROP TABLE day0;
INSERT INTO day0_copy SELECT * FROM day1 WHERE id <= 100;
SELECT id FROM day0_copy ORDER BY e <-> (SELECT e FROM day1 WHERE id = 57) LIMIT 1;

-- retraining on its own rows: reset the option and rebuild
ALTER INDEX day2_idx RESET (codebooks_from);
REINDEX INDEX day2_idx;
SELECT trained, inherited, training_rows FROM ivfpq_index_stats('day2_idx');
-- and back: inherit again
ALTER INDEX day2_idx SET (codebooks_from = 'day1_idx');
REINDEX INDEX day2_idx;
SELECT trained, inherited FROM ivfpq_index_stats('day2_idx');

-- errors
CREATE TABLE other (id int, e vector(16), e8 vector(8));
CREATE INDEX ON other USING ivfpq (e) WITH (codebooks_from = 'no_such_index');
CREATE INDEX ON other USING ivfpq (e) WITH (codebooks_from = 'bad name!');
CREATE INDEX other_btree ON other (id);
CREATE INDEX ON other USING ivfpq (e) WITH (codebooks_from = 'other_btree');
CREATE INDEX ON other USING ivfpq (e vector_ip_ops) WITH (codebooks_from = 'day1_idx');
CREATE INDEX ON other USING ivfpq (e8) WITH (codebooks_from = 'day1_idx');
CREATE INDEX ON other USING ivfpq (e) WITH (codebooks_from = 'day1_idx', m = 4);
CREATE INDEX ON other USING ivfpq (e) WITH (codebooks_from = 'day1_idx', lists = 7);
CREATE INDEX other_untrained ON other USING ivfpq (e);
CREATE INDEX ON other USING ivfpq (e) WITH (codebooks_from = 'other_untrained');
ALTER INDEX day2_idx SET (codebooks_from = 'day2_idx');
REINDEX INDEX day2_idx;

DROP TABLE day1, day2, day0_copy, other;
DROP FUNCTION day2_recall();
