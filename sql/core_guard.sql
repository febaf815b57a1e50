-- The C++/FAISS chain from SQL: k-means runs in the core, core failures come
-- back as clean SQL errors with a SQLSTATE, and the session stays usable.
\set VERBOSITY default

SELECT ivfpq_kernels() IN ('avx2+fma', 'portable') AS known_kernels;

-- k-means on two well-separated clusters puts one centroid on each cluster's
-- mean (no input point is within 0.01 of either mean, so a centroid left on
-- its initial point fails)
CREATE TABLE kmeans_points AS
	SELECT i % 2 AS cluster, (i % 2) * 10 + (i % 13) * 0.1 AS x, (i % 2) * 10 + (i % 11) * 0.1 AS y
	FROM generate_series(1, 200) i;
WITH means AS (SELECT ('[' || avg(x) || ',' || avg(y) || ']')::vector AS mean FROM kmeans_points GROUP BY cluster),
	 k AS (SELECT ivfpq_kmeans(array_agg(('[' || x || ',' || y || ']')::vector), 2) AS c FROM kmeans_points)
SELECT array_length(c, 1) AS centroids,
	   (SELECT count(*) FROM means WHERE (SELECT count(*) FROM unnest(c) v WHERE v <-> mean < 0.001) = 1) AS means_found,
	   (SELECT min(p <-> m.mean) FROM means m, (SELECT ('[' || x || ',' || y || ']')::vector AS p FROM kmeans_points) s) > 0.01
		AS no_point_on_a_mean
FROM k;
DROP TABLE kmeans_points;

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
-- as many clusters as points: the centroids are exactly those points
SELECT array_length(c, 1) AS k3,
	   (SELECT count(*) FROM unnest(ARRAY['[1,2]', '[3,4]', '[5,6]']::vector[]) p
		 WHERE (SELECT count(*) FROM unnest(c) v WHERE v <-> p < 1e-5) = 1) AS k3_points_found
FROM (SELECT ivfpq_kmeans(ARRAY['[1,2]', '[3,4]', '[5,6]']::vector[], 3) AS c) k;

-- a long k-means is cancelled promptly by statement_timeout (inside FAISS)
CREATE TABLE kmeans_input AS
	SELECT array_agg(ARRAY(SELECT random() FROM generate_series(1, 32) WHERE i > 0)::vector) AS vs
	FROM generate_series(1, 20000) i;
SET statement_timeout = '1s';
SELECT ivfpq_kmeans(vs, 1000, 10000) FROM kmeans_input;
RESET statement_timeout;
SELECT 2 AS still_alive;
DROP TABLE kmeans_input;
