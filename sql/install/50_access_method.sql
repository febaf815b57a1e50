
-- The ivfpq index access method and its operator classes.

CREATE FUNCTION ivfpqhandler(internal) RETURNS index_am_handler
	AS 'MODULE_PATHNAME' LANGUAGE C;

CREATE ACCESS METHOD ivfpq TYPE INDEX HANDLER ivfpqhandler;
COMMENT ON ACCESS METHOD ivfpq IS 'IVF_PQ index: PQ codes in the index, exact rerank from the heap';

-- Support function 2 of each opclass tells the index which metric it serves.
-- (Number 1, an exact distance, was declared by 0.1 and never called; the
-- metric keeps number 2 so that indexes made under 0.1 read the same.)
CREATE FUNCTION ivfpq_metric_l2(internal) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION ivfpq_metric_ip(internal) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION ivfpq_metric_cosine(internal) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE OPERATOR CLASS vector_l2_ops
	DEFAULT FOR TYPE vector USING ivfpq AS
	OPERATOR 1 <-> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 2 ivfpq_metric_l2(internal);

CREATE OPERATOR CLASS vector_ip_ops
	FOR TYPE vector USING ivfpq AS
	OPERATOR 1 <#> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 2 ivfpq_metric_ip(internal);

CREATE OPERATOR CLASS vector_cosine_ops
	FOR TYPE vector USING ivfpq AS
	OPERATOR 1 <=> (vector, vector) FOR ORDER BY float_ops,
	FUNCTION 2 ivfpq_metric_cosine(internal);
