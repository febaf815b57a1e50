
-- ivfpq_verify: amcheck-style consistency check of an ivfpq index, one row
-- per problem (none when healthy).  Holds ShareLock on the table while it
-- runs.  The index owner and roles with the privileges of
-- pg_stat_scan_tables may call it.

CREATE FUNCTION ivfpq_verify(index regclass, heapallindexed boolean DEFAULT false,
	OUT block bigint, OUT list integer, OUT problem text)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'ivfpq_verify' LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION ivfpq_verify(regclass, boolean) IS
	'checks an ivfpq index (pages, list chains, heap TIDs, finite centroids and codebooks; with heapallindexed, that every row the index should hold has an entry): one row per problem, none when healthy';
