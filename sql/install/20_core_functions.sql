
-- Core utilities: prove the C++/FAISS chain from SQL and show the kernels in use.

CREATE FUNCTION ivfpq_kmeans(vectors vector[], k integer, iterations integer DEFAULT 20)
	RETURNS vector[] AS 'MODULE_PATHNAME', 'ivfpq_kmeans'
	LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION ivfpq_kmeans(vector[], integer, integer) IS
	'k-means (FAISS) over an array of vectors; returns k centroids';

CREATE FUNCTION ivfpq_kernels() RETURNS text
	AS 'MODULE_PATHNAME', 'ivfpq_kernels'
	LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION ivfpq_kernels() IS
	'distance kernels selected for this CPU: avx2+fma or portable';
