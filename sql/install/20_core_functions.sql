
-- Diagnostics: run the core from SQL (FAISS k-means, the distance kernels in
-- use).  Not needed to use the index; kept to check an installation.

CREATE FUNCTION ivfpq_kmeans(vectors vector[], k integer, iterations integer DEFAULT 20)
	RETURNS vector[] AS 'MODULE_PATHNAME', 'ivfpq_kmeans'
	LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION ivfpq_kmeans(vector[], integer, integer) IS
	'diagnostic: FAISS k-means over an array of vectors, returns k centroids (checks the FAISS link; not used by the index)';

CREATE FUNCTION ivfpq_kernels() RETURNS text
	AS 'MODULE_PATHNAME', 'ivfpq_kernels'
	LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION ivfpq_kernels() IS
	'distance kernels selected for this CPU: avx2+fma or portable';
