-- The C++/FAISS chain from SQL: k-means runs in the core, core failures come
-- back as clean SQL errors with a SQLSTATE, and the session stays usable.
\set VERBOSITY default

SELECT ivfpq_kernels() IN ('avx2+fma', 'portable') AS known_kernels;

-- k-means on two obvious clusters finds both centres
SELECT array_length(c, 1) AS centroids,
	   (SELECT count(*) FROM unnest(c) v WHERE v <-> '[0,0]' < 0.1) AS near_origin,
	   (SELECT count(*) FROM unnest(c) v WHERE v <-> '[10,10]' < 0.1) AS near_ten
FROM (SELECT ivfpq_kmeans(array_agg(v), 2) AS c
	  FROM (SELECT ('[' || (i % 2) * 10 + (i % 7) * 0.001 || ',' || (i % 2) * 10 || ']')::vector AS v
			FROM generate_series(1, 200) i) s) k;

-- core failures surface as SQL errors with a real SQLSTATE ...
\set VERBOSITY sqlstate
SELECT ivfpq_kmeans(ARRAY['[1,2]', '[3,4]']::vector[], 5);
\set VERBOSITY default
SELECT ivfpq_kmeans(ARRAY['[1,2]', '[3,4]']::vector[], 5);
SELECT ivfpq_kmeans(ARRAY['[1,2]', '[3,4,5]']::vector[], 1);
SELECT ivfpq_kmeans(ARRAY['[1,2]', NULL]::vector[], 1);
SELECT ivfpq_kmeans(ARRAY[]::vector[], 1);
SELECT ivfpq_kmeans(ARRAY['[1,2]']::vector[], 0);
-- ... and the session is still usable afterwards
SELECT 1 AS still_alive;
SELECT array_length(ivfpq_kmeans(ARRAY['[1,2]', '[3,4]', '[5,6]']::vector[], 3), 1) AS k3;

-- a long k-means is cancelled promptly by statement_timeout (inside FAISS)
CREATE TABLE kmeans_input AS
	SELECT array_agg(ARRAY(SELECT random() FROM generate_series(1, 32) WHERE i > 0)::vector) AS vs
	FROM generate_series(1, 20000) i;
SET statement_timeout = '1s';
SELECT ivfpq_kmeans(vs, 1000, 10000) FROM kmeans_input;
RESET statement_timeout;
SELECT 2 AS still_alive;
DROP TABLE kmeans_input;
