
-- ivfpq_index_stats: what an ivfpq index holds, counted from its pages.

CREATE FUNCTION ivfpq_index_stats(index regclass,
	OUT lists integer, OUT rows bigint, OUT pages bigint, OUT bytes_per_row double precision,
	OUT list_min bigint, OUT list_median bigint, OUT list_max bigint,
	OUT training_rows bigint, OUT dimensions integer, OUT m integer, OUT nbits integer,
	OUT metric text, OUT trained boolean, OUT inherited boolean, OUT built_at timestamptz)
	AS 'MODULE_PATHNAME', 'ivfpq_index_stats' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION ivfpq_index_stats(regclass) IS
	'lists, rows, pages, bytes per row, list sizes, training rows, PQ parameters, whether the centroids and codebooks were trained or inherited (codebooks_from), and when the index was built';
