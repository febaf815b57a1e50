-- Filter columns: CREATE INDEX ... USING ivfpq (embedding, category, ...).
-- The scan checks the conditions on the filter columns on the index entries
-- before re-ranking.  With every list probed and a deep re-rank the index
-- answer must be the exact answer of the filtered query, for every kind of
-- condition and column type.
CREATE TABLE f (id int, e vector(8), cat int, small int2, big int8, price float8,
	weight float4, flag bool, day date, ts timestamptz);
INSERT INTO f SELECT i,
	ARRAY(SELECT sin(i * 0.37 + d * 1.3 + (i % 17) * d)::real FROM generate_series(1, 8) d)::vector,
	CASE WHEN i % 97 = 0 THEN NULL ELSE i % 50 END,
	(i % 7)::int2,
	i::int8 * 1000000000,
	CASE WHEN i % 89 = 0 THEN NULL WHEN i % 101 = 0 THEN 'NaN' WHEN i % 103 = 0 THEN '-0'
		WHEN i % 107 = 0 THEN '-Infinity' ELSE (i % 37) * 0.5 - 4 END,
	((i % 13) * 0.25)::float4,
	i % 3 = 0,
	date '2026-01-01' + (i % 30),
	timestamptz '2026-01-01 00:00+00' + (i % 48) * interval '1 hour'
FROM generate_series(1, 5000) i;
CREATE INDEX f_idx ON f USING ivfpq (e, cat, small, big, price, weight, day, ts)
	WITH (lists = 16, m = 4);
ANALYZE f;
SELECT rows FROM ivfpq_index_stats('f_idx');
SELECT * FROM ivfpq_verify('f_idx', true);

SET ivfpq.probes = 16;
SET ivfpq.rerank = 10000;

-- The index answer (index scan forced) against the exact one (sequential
-- scan and sort) of the same query; "in the index" when the plan shows the
-- conditions as the scan's Index Cond.  IN lists stay above the scan: PG 15
-- plans no array condition on a later index column with an ORDER BY.
CREATE FUNCTION filter_check(cond text, k int DEFAULT 20) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	q text := format('SELECT id, e <-> (SELECT e FROM f WHERE id = 1) AS d FROM f WHERE %s ORDER BY d LIMIT %s', cond, k);
	plan text := '';
	line text;
	via_index float8[];
	exact float8[];
	n_index int;
BEGIN
	PERFORM set_config('enable_seqscan', 'off', true);
	PERFORM set_config('enable_bitmapscan', 'off', true);
	PERFORM set_config('enable_indexscan', 'on', true);
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
		plan := plan || line || E'\n';
	END LOOP;
	EXECUTE format('SELECT array_agg(round(d::numeric, 5)::float8 ORDER BY d), count(*) FROM (%s) s', q)
		INTO via_index, n_index;
	PERFORM set_config('enable_seqscan', 'on', true);
	PERFORM set_config('enable_indexscan', 'off', true);
	EXECUTE format('SELECT array_agg(round(d::numeric, 5)::float8 ORDER BY d) FROM (%s) s', q) INTO exact;
	PERFORM set_config('enable_indexscan', 'on', true);
	IF plan !~ 'Index Scan using f_idx' THEN
		RETURN 'not the index: ' || plan;
	END IF;
	IF via_index IS DISTINCT FROM exact THEN
		RETURN format('differs: index %s, exact %s', via_index, exact);
	END IF;
	RETURN format('ok, %s rows, %s', n_index,
				  CASE WHEN plan ~ 'Index Cond' THEN 'in the index' ELSE 'above the scan' END);
END $$;

SELECT c, filter_check(c) FROM unnest(ARRAY[
	'cat = 7',
	'cat = 7::int8',
	'cat = 7::int2',
	'cat < 3',
	'cat <= 3',
	'cat > 47',
	'cat >= 47',
	'cat BETWEEN 10 AND 12',
	'cat > 10 AND cat < 11',
	'cat IN (1, 2, 40)',
	'cat = ANY (''{1,NULL,5}''::int[])',
	'cat = ANY (''{1,2}''::int8[])',
	'cat IN (1, 2) AND cat IN (2, 3)',
	'cat IN (1, 2, 3, 4) AND cat > 2',
	'cat < ANY (''{2,4}''::int[])',
	'cat > ANY (''{45,48}''::int[])',
	'cat IS NULL',
	'cat IS NOT NULL AND cat < 2',
	'small = 3 AND cat < 10',
	'big > 4990000000000',
	'big <= 3000000000 AND big >= 1000000000',
	'price < 0',
	'price = 0',
	'price = ''NaN''',
	'price > 10',
	'price >= ''Infinity''',
	'price = ''-Infinity''',
	'price < ''-1000''',
	'price > 2.5::float4',
	'weight = 0.5',
	'weight > 2.5::float8',
	'flag AND cat = 3',
	'day >= ''2026-01-28''',
	'ts < ''2026-01-01 03:00+00''',
	'ts = ''2026-01-02 23:00+00'' AND flag',
	'cat IS NULL AND small = 1'
]) c;

-- Conditions no row passes.
SELECT filter_check('cat = 1000') AS no_rows, filter_check('cat IN (1, 2) AND cat = 3') AS disjoint_in,
	filter_check('cat < 5 AND cat > 6') AS empty_range, filter_check('big > 9223372036854775807::int8 - 1 AND big > 9223372036854775806') AS at_max;
SET enable_seqscan = off;
PREPARE by_cat(int) AS SELECT count(*) FROM (SELECT id FROM f WHERE cat = $1
	ORDER BY e <-> (SELECT e FROM f WHERE id = 1) LIMIT 10) s;
EXECUTE by_cat(7);
EXECUTE by_cat(NULL);
-- a generic plan hands the scan a NULL key at run time: no row passes
SET plan_cache_mode = force_generic_plan;
EXPLAIN (COSTS OFF) EXECUTE by_cat(NULL);
EXECUTE by_cat(NULL);
EXECUTE by_cat(7);
RESET plan_cache_mode;
DEALLOCATE by_cat;
RESET enable_seqscan;

-- Rows added after the build, deletes and VACUUM keep the filter values with
-- their entries.
INSERT INTO f SELECT i,
	ARRAY(SELECT cos(i * 0.41 + d)::real FROM generate_series(1, 8) d)::vector,
	CASE WHEN i % 11 = 0 THEN NULL ELSE 7 END, 1, i, i * 0.5, 1, true, date '2026-03-01', NULL
FROM generate_series(5001, 5400) i;
SELECT c, filter_check(c, 600) FROM unnest(ARRAY['cat = 7', 'cat IS NULL', 'day = ''2026-03-01''', 'ts IS NULL']) c;
DELETE FROM f WHERE id % 3 = 0;
VACUUM f;
SELECT * FROM ivfpq_verify('f_idx', true);
SELECT c, filter_check(c, 600) FROM unnest(ARRAY['cat = 7', 'cat IS NULL', 'flag = false AND cat < 5']) c;
REINDEX INDEX f_idx;
SELECT c, filter_check(c, 600) FROM unnest(ARRAY['cat = 7', 'price > 10']) c;

-- Without a filter the multicolumn index serves plain k-NN queries too.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM f ORDER BY e <-> '[1,1,1,1,1,1,1,1]' LIMIT 5;
RESET enable_seqscan;

-- An index built on an empty table (untrained: exact scan) filters too.
CREATE TABLE g (id int, e vector(4), cat int);
CREATE INDEX g_idx ON g USING ivfpq (e, cat);
INSERT INTO g SELECT i, ARRAY[i % 10, i % 7, i % 3, 1]::vector, i % 5 FROM generate_series(1, 300) i;
SET enable_seqscan = off;
SELECT count(*), bool_and(cat = 2) FROM (SELECT id, cat FROM g WHERE cat = 2 ORDER BY e <-> '[1,1,1,1]' LIMIT 100) s;
RESET enable_seqscan;
SELECT * FROM ivfpq_verify('g_idx', true);

-- Wrong shapes are refused with a reason.
CREATE INDEX ON f USING ivfpq (cat, e);
CREATE INDEX ON f USING ivfpq (e, e);
CREATE TABLE h (e vector(4), label text, n numeric, flag bool);
CREATE INDEX ON h USING ivfpq (e, label);
CREATE INDEX ON h USING ivfpq (e, n);
CREATE INDEX ON h USING ivfpq (e, flag);
CREATE INDEX ON f USING ivfpq (e) INCLUDE (cat);

-- The operator classes are valid.
SELECT opcname, amvalidate(oid) FROM pg_opclass
WHERE opcmethod = (SELECT oid FROM pg_am WHERE amname = 'ivfpq') ORDER BY opcname;

DROP FUNCTION filter_check(text, int);
DROP TABLE f, g, h;
