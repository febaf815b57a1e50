-- The shared quantizer cache (ivfpq in shared_preload_libraries,
-- ivfpq.shared_cache_mb): its entries, of all databases, and its totals.
-- No rows when the server runs without one.

CREATE FUNCTION ivfpq_shared_cache(
	OUT database oid, OUT index oid, OUT bytes bigint, OUT pins integer, OUT retired boolean,
	OUT hits bigint, OUT lists integer, OUT lists_with_terms bigint)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'ivfpq_shared_cache' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION ivfpq_shared_cache() IS
	'entries of the shared quantizer cache: database and index OIDs, bytes, transactions using it now, whether it is retired (stale, freed by its last user), times found by a backend, lists and lists whose distance terms are computed';

CREATE FUNCTION ivfpq_shared_cache_stats(
	OUT capacity_bytes bigint, OUT used_bytes bigint, OUT entries bigint, OUT slots integer,
	OUT evictions bigint, OUT refusals bigint)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'ivfpq_shared_cache_stats' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION ivfpq_shared_cache_stats() IS
	'the shared quantizer cache as a whole: its size (ivfpq.shared_cache_mb), bytes held by entries, entries, slots, entries evicted and quantizers that did not fit (kept by their backend)';
