-- vector_type: the vector type's text I/O, typmod, casts, distances,
-- comparison and error classes.  Errors show their SQLSTATE.
\set VERBOSITY sqlstate
\set SHOW_CONTEXT never

-- Run a statement and show its error as "SQLSTATE: message (detail)".
CREATE FUNCTION vt_error(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' (' || nullif(detail, '') || ')', '');
END
$$;

-- text round-trips
SELECT '[1,2,3]'::vector;
SELECT ' [ 1 , 2.5 ,3 ] '::vector;
SELECT E'[\t1,\n-2.25 ,\r3]'::vector;
SELECT '[-1,-0.5,0,-0]'::vector;
SELECT '[1e3,1.5E-3,-2e+2,+4]'::vector;
SELECT '[0.1,0.2,0.3]'::vector;
SELECT '[1.23456789,123456789,0.000001]'::vector;
SELECT '[3.4028235e38,-3.4028235e38,1.17549435e-38,1.4e-45]'::vector;
SELECT '[1e-50]'::vector;  -- underflow rounds to zero, like pgvector
SELECT '[1,2,3]'::vector::text::vector = '[1,2,3]'::vector AS round_trip;
SELECT '[0.1,0.2,0.3]'::vector::text AS shortest;
SELECT NULL::vector;

-- syntax errors (22P02)
SELECT ''::vector;
SELECT '1,2,3'::vector;
SELECT '[1,2,3'::vector;
SELECT '[]'::vector;
SELECT '[ ]'::vector;
SELECT '[1,,2]'::vector;
SELECT '[1,2,]'::vector;
SELECT '[,1]'::vector;
SELECT '[1 2]'::vector;
SELECT '[a,b]'::vector;
SELECT '[1,2]x'::vector;
SELECT '[1,2] ]'::vector;
SELECT '[1,2x]'::vector;
SELECT vt_error($$SELECT '[1,2,3'::vector$$);
SELECT vt_error($$SELECT '[1,2]junk'::vector$$);
SELECT vt_error($$SELECT '1,2'::vector$$);
SELECT vt_error($$SELECT '[1;2]'::vector$$);
SELECT vt_error($$SELECT '[1,,2]'::vector$$);
SELECT vt_error($$SELECT '[]'::vector$$);

-- NaN, infinity and out-of-range values (22003)
SELECT '[NaN,1]'::vector;
SELECT '[1,Infinity]'::vector;
SELECT '[-inf,1]'::vector;
SELECT '[1e39]'::vector;
SELECT '[-1e39]'::vector;
SELECT vt_error($$SELECT '[NaN,1]'::vector$$);
SELECT vt_error($$SELECT '[1,-Infinity]'::vector$$);
SELECT vt_error($$SELECT '[4e38]'::vector$$);

-- typmod
SELECT '[1,2,3]'::vector(3);
SELECT '[1,2]'::vector(3);
SELECT '[1,2,3]'::vector::vector(2);
SELECT '[1,2,3]'::vector(0);
SELECT '[1,2,3]'::vector(16001);
SELECT '[1,2,3]'::vector(3, 2);
SELECT vt_error($$SELECT '[1,2]'::vector(3)$$);
SELECT vt_error($$SELECT '[1]'::vector(0)$$);
SELECT vt_error($$SELECT '[1]'::vector(16001)$$);
SELECT vt_error($$SELECT '[1]'::vector(1, 1)$$);
CREATE TABLE vt_typmod (e vector(3));
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
	WHERE attrelid = 'vt_typmod'::regclass AND attname = 'e';
INSERT INTO vt_typmod VALUES ('[1,2,3]');
INSERT INTO vt_typmod VALUES ('[1,2]');
INSERT INTO vt_typmod VALUES ('[1,2,3,4]'::vector);
INSERT INTO vt_typmod VALUES (ARRAY[4,5,6]);
INSERT INTO vt_typmod VALUES (ARRAY[4,5]);
UPDATE vt_typmod SET e = '[1,2]'::vector;
SELECT * FROM vt_typmod;
DROP TABLE vt_typmod;

-- dimension limits
SELECT vector_dims(array_fill(1.5::real, ARRAY[16000])::vector);
SELECT vector_dims(array_fill(1.5::real, ARRAY[16000])::vector(16000));
SELECT vector_dims(('[' || array_to_string(array_fill(0, ARRAY[16000]), ',') || ']')::vector);
SELECT array_fill(1.5::real, ARRAY[16001])::vector;
SELECT ('[' || array_to_string(array_fill(0, ARRAY[16001]), ',') || ']')::vector;
SELECT vt_error($$SELECT array_fill(1::int, ARRAY[16001])::vector$$);
SELECT length(array_fill(1.5::real, ARRAY[16000])::vector::text);

-- STORAGE main keeps large values inline, compressed when they compress
CREATE TABLE vt_big (e vector);
INSERT INTO vt_big VALUES (array_fill(0::real, ARRAY[16000])), (array_fill(0.25::real, ARRAY[16000]));
SELECT vector_dims(e), pg_column_size(e) < 64008 AS compressed, e <-> e AS self,
	vector_norm(e) FROM vt_big ORDER BY 4;
DROP TABLE vt_big;
-- a 768-dimension (3 KB) incompressible vector stays in the heap row, while
-- pgvector's STORAGE external would move it to TOAST
CREATE TABLE vt_inline (e vector(768));
CREATE TABLE vt_external (e vector(768));
ALTER TABLE vt_external ALTER COLUMN e SET STORAGE external;
INSERT INTO vt_inline SELECT array_agg(sin(i * 7919 + j)::real) FROM generate_series(1, 768) i,
	generate_series(1, 20) j GROUP BY j;
INSERT INTO vt_external SELECT * FROM vt_inline;
SELECT count(*), min(pg_column_size(e)), max(pg_column_size(e)) FROM vt_inline;
SELECT pg_relation_size(reltoastrelid) = 0 AS toast_empty FROM pg_class WHERE relname = 'vt_inline';
SELECT pg_relation_size(reltoastrelid) > 0 AS toast_used FROM pg_class WHERE relname = 'vt_external';
SELECT count(*) FROM vt_inline i JOIN vt_external x ON i.e = x.e;
DROP TABLE vt_inline, vt_external;

-- casts from arrays
SELECT ARRAY[1,2,3]::vector;
SELECT ARRAY[1.5,2.5,-3]::real[]::vector;
SELECT ARRAY[1.5,2.5,-3]::double precision[]::vector;
SELECT ARRAY[1.5,2.5,-3]::numeric[]::vector;
SELECT '{1,2,3}'::int[]::vector(3);
SELECT '{1,2,3}'::int[]::vector(2);
SELECT '{}'::real[]::vector;
SELECT ARRAY[1,NULL,3]::vector;
SELECT ARRAY[[1,2],[3,4]]::vector;
SELECT ARRAY['NaN']::real[]::vector;
SELECT ARRAY['Infinity']::double precision[]::vector;
SELECT ARRAY[1e300]::double precision[]::vector;
SELECT ARRAY['NaN']::numeric[]::vector;
SELECT ARRAY[1e39]::numeric[]::vector;
SELECT vt_error($$SELECT ARRAY[1,NULL,3]::vector$$);
SELECT vt_error($$SELECT ARRAY[[1,2],[3,4]]::vector$$);
SELECT vt_error($$SELECT '{}'::real[]::vector$$);

-- binary send format: int16 dim, int16 unused, float4 values (big-endian)
SELECT vector_send('[1,2,3]');
SELECT vector_send('[-0.5]');

-- casts to real[]
SELECT '[1,2.5,-3]'::vector::real[];
SELECT pg_typeof('[1,2.5,-3]'::vector::real[]);
SELECT ('[1,2,3]'::vector::real[])[2];
SELECT array_length('[1,2,3,4]'::vector::real[], 1);

-- distances against hand-computed values
SELECT '[1,2,3]'::vector <-> '[3,2,1]' AS l2;              -- sqrt(8)
SELECT '[0,0]'::vector <-> '[3,4]' AS l2;                  -- 5
SELECT l2_distance('[0,0]', '[3,4]');
SELECT vector_l2_squared_distance('[0,0]', '[3,4]');       -- 25
SELECT inner_product('[1,2,3]', '[4,5,6]');                -- 32
SELECT '[1,2,3]'::vector <#> '[4,5,6]' AS neg_ip;          -- -32
SELECT vector_negative_inner_product('[1,2,3]', '[4,5,6]');
SELECT negative_inner_product('[1,2,3]', '[4,5,6]');
SELECT '[1,0]'::vector <=> '[0,1]' AS cos;                 -- 1
SELECT '[1,1]'::vector <=> '[2,2]' AS cos;                 -- 0
SELECT '[1,1]'::vector <=> '[-1,-1]' AS cos;               -- 2
SELECT cosine_distance('[3,4]', '[4,3]');                  -- 1 - 24/25 = 0.04
SELECT cosine_distance('[0,0]', '[1,1]');                  -- undefined: NaN
SELECT l1_distance('[1,2,3]', '[4,0,3]');                  -- 5
SELECT '[1,2,3]'::vector <-> '[1,2]';
SELECT '[1,2,3]'::vector <#> '[1,2]';
SELECT '[1,2,3]'::vector <=> '[1,2]';
SELECT vt_error($$SELECT inner_product('[1,2,3]', '[1,2]')$$);
SELECT vt_error($$SELECT '[1,2,3]'::vector <-> '[3,2]'$$);

-- norm, normalize, dims
SELECT vector_norm('[3,4]');                               -- 5
SELECT vector_norm('[1,2,2,4]');                           -- 5
SELECT vector_norm('[0,0,0]');
SELECT l2_normalize('[3,4]');                              -- [0.6,0.8]
SELECT l2_normalize('[0,-2,0]');                           -- [0,-1,0]
SELECT l2_normalize('[0,0,0]');                            -- zero stays zero
SELECT vector_norm(l2_normalize('[1,2,3,4,5]')) BETWEEN 0.9999999 AND 1.0000001 AS unit;
SELECT vector_dims('[1,2,3]');
SELECT vector_dims('[7]'::vector);
SELECT vector_dims(array_fill(1::int, ARRAY[1000])::vector);

-- arithmetic and slicing
SELECT '[1,2,3]'::vector + '[4,5,6]';
SELECT '[1,2,3]'::vector - '[4,5,6]';
SELECT '[1,2,3]'::vector * '[4,5,6]';
SELECT '[1,2]'::vector || '[3]';
SELECT '[3e38]'::vector + '[3e38]';
SELECT vt_error($$SELECT '[3e38]'::vector - '[-3e38]'$$);
SELECT '[1,2]'::vector + '[1,2,3]';
SELECT subvector('[1,2,3,4,5]', 2, 3);
SELECT subvector('[1,2,3,4,5]', 4, 10);
SELECT subvector('[1,2,3,4,5]', 0, 2);
SELECT subvector('[1,2,3,4,5]', 6, 1);

-- comparison and ordering (element by element, then by dimensions)
SELECT '[1,2,3]'::vector = '[1,2,3]', '[1,2,3]'::vector = '[1,2]',
	'[1,2,3]'::vector <> '[1,2,4]';
SELECT '[0]'::vector = '[-0]' AS zero_eq;
SELECT '[1,2]'::vector < '[1,3]', '[1,2]'::vector < '[1,2,0]',
	'[2]'::vector > '[1,9,9]', '[1,2]'::vector <= '[1,2]',
	'[1,2]'::vector >= '[1,2,3]';
SELECT vector_cmp('[1,2]', '[1,2]'), vector_cmp('[1,2]', '[1,3]'),
	vector_cmp('[1,3]', '[1,2]'), vector_cmp('[1,2]', '[1,2,3]');
SELECT vector_hash('[0,1]') = vector_hash('[-0,1]') AS hash_zero;
SELECT vector_hash('[1,2]') = vector_hash('[1,2]') AS hash_same;
SELECT vector_hash('[1,2]') <> vector_hash('[2,1]') AS hash_differs;
SELECT vector_hash_extended('[1,2]', 0)::bit(32) = vector_hash('[1,2]')::bit(32) AS hash_ext_low_bits;

CREATE TABLE vt_items (id int, e vector);
INSERT INTO vt_items VALUES
	(1, '[1,2,3]'), (2, '[1,2]'), (3, '[0,5,5]'), (4, '[1,2,3]'),
	(5, '[-1,0,0]'), (6, '[1,2]'), (7, '[1,2,3,0]'), (8, '[-0,5,5]');
SELECT e FROM vt_items ORDER BY e, id;
SELECT e FROM vt_items ORDER BY e DESC, id;
SELECT DISTINCT e FROM vt_items WHERE id <> 8 ORDER BY e;
SELECT count(DISTINCT e) FROM vt_items;                    -- -0 equals 0
SELECT min(id), count(*) FROM vt_items GROUP BY e ORDER BY e;
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT min(id), count(*) FROM vt_items GROUP BY e;
SELECT min(id), count(*) FROM vt_items GROUP BY e ORDER BY min(id);
EXPLAIN (COSTS OFF) SELECT DISTINCT e FROM vt_items;
SELECT count(*) FROM (SELECT DISTINCT e FROM vt_items) d;
RESET enable_sort;
SELECT e FROM vt_items WHERE id <= 2 UNION SELECT e FROM vt_items WHERE id >= 6 ORDER BY e;
SELECT count(*) FROM vt_items a JOIN vt_items b ON a.e = b.e;
CREATE INDEX vt_items_btree ON vt_items (e);
SET enable_seqscan = off;
SELECT id FROM vt_items WHERE e = '[1,2,3]' ORDER BY id;
RESET enable_seqscan;
DROP INDEX vt_items_btree;
CREATE INDEX vt_items_hash ON vt_items USING hash (e);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM vt_items WHERE e = '[0,5,5]';
SELECT id FROM vt_items WHERE e = '[0,5,5]' ORDER BY id;
RESET enable_seqscan;
DROP TABLE vt_items;

-- aggregates
SELECT avg(e), sum(e) FROM (VALUES ('[1,2,3]'::vector), ('[3,4,5]'), (NULL)) v(e);
SELECT avg(e), sum(e) FROM (VALUES (NULL::vector)) v(e);
SELECT avg(e) FROM (VALUES ('[1,2]'::vector), ('[1,2,3]')) v(e);

-- a table with a typed column and the distance operator
CREATE TABLE t (e vector(3));
INSERT INTO t VALUES ('[1,2,3]');
SELECT e <-> '[3,2,1]' FROM t;
SELECT e <#> '[3,2,1]', e <=> '[3,2,1]' FROM t;
SELECT attstorage FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'e';
DROP TABLE t;

-- the type's catalog entry
SELECT typstorage, typalign, typlen FROM pg_type WHERE typname = 'vector';
SELECT castsource::regtype, casttarget::regtype, castcontext
	FROM pg_cast WHERE castsource = 'vector'::regtype OR casttarget = 'vector'::regtype
	ORDER BY castsource::regtype::text, casttarget::regtype::text;
DROP FUNCTION vt_error(text);
