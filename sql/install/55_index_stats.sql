
-- ivfpq_index_stats: what an ivfpq index holds, counted from its pages.
-- Needs SELECT on the index's table or the privileges of pg_stat_scan_tables.

CREATE FUNCTION ivfpq_index_stats(index regclass,
	OUT lists integer, OUT rows bigint, OUT pages bigint, OUT bytes_per_row double precision,
	OUT list_min bigint, OUT list_median bigint, OUT list_max bigint,
	OUT training_rows bigint, OUT dimensions integer, OUT m integer, OUT nbits integer,
	OUT metric text, OUT trained boolean, OUT inherited boolean, OUT built_at timestamptz,
	OUT free_pages bigint, OUT list_pages_min integer, OUT list_pages_median integer,
	OUT list_pages_max integer, OUT added_since_build bigint, OUT added_fraction double precision)
	AS 'MODULE_PATHNAME', 'ivfpq_index_stats' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION ivfpq_index_stats(regclass) IS
	'lists, rows, pages, bytes per row, list sizes, training rows, PQ parameters, whether the centroids and codebooks were trained or inherited (codebooks_from), when the index was built, free pages, pages per list, and the rows added since the build';
