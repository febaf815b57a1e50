
-- The ivfpq index access method and its operator classes.

CREATE FUNCTION ivfpqhandler(internal) RETURNS index_am_handler
	AS 'MODULE_PATHNAME' LANGUAGE C;

CREATE ACCESS METHOD ivfpq TYPE INDEX HANDLER ivfpqhandler;
COMMENT ON ACCESS METHOD ivfpq IS 'IVF_PQ index: PQ codes in the index, exact rerank from the heap';

-- Support function 2 of each opclass tells the index which metric it serves.
CREATE FUNCTION ivfpq_metric_l2(internal) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION ivfpq_metric_ip(internal) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION ivfpq_metric_cosine(internal) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE OPERATOR CLASS vector_l2_ops
	DEFAULT FOR TYPE vector USING ivfpq AS
	OPERATOR 1 <-> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 1 l2_distance(vector, vector),
	FUNCTION 2 ivfpq_metric_l2(internal);

CREATE OPERATOR CLASS vector_ip_ops
	FOR TYPE vector USING ivfpq AS
	OPERATOR 1 <#> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 1 negative_inner_product(vector, vector),
	FUNCTION 2 ivfpq_metric_ip(internal);

CREATE OPERATOR CLASS vector_cosine_ops
	FOR TYPE vector USING ivfpq AS
	OPERATOR 1 <=> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 1 cosine_distance(vector, vector),
	FUNCTION 2 ivfpq_metric_cosine(internal);

CREATE FUNCTION ivfpq_index_stats(index regclass,
	OUT lists integer, OUT rows bigint, OUT pages bigint, OUT bytes_per_row double precision,
	OUT list_min bigint, OUT list_median bigint, OUT list_max bigint,
	OUT training_rows bigint, OUT dimensions integer, OUT m integer, OUT nbits integer,
	OUT metric text, OUT trained boolean)
	AS 'MODULE_PATHNAME', 'ivfpq_index_stats' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION ivfpq_index_stats(regclass) IS
	'lists, rows, pages, bytes per row, list sizes, training rows and PQ parameters of an ivfpq index';
