-- Filter columns: the scalar columns after the vector column of an ivfpq
-- index, CREATE INDEX ... USING ivfpq (embedding, category).  The scan checks
-- their conditions (=, <, <=, >=, >, IS [NOT] NULL) on the index entries
-- before re-ranking, so a filtered query spends its re-rank on rows
-- it wants.  The operators keep btree's strategy numbers.  int2, int4 and
-- int8 share a family (and float4 with float8), so a condition may compare
-- a column with a constant of another width, as with btree.  (No boolean
-- columns: the planner turns flag = true into plain flag, which only btree
-- and hash indexes can match.)

CREATE OPERATOR FAMILY integer_ops USING ivfpq;

CREATE OPERATOR CLASS int2_ops
	DEFAULT FOR TYPE int2 USING ivfpq FAMILY integer_ops AS
	OPERATOR 1 <,
	OPERATOR 2 <=,
	OPERATOR 3 =,
	OPERATOR 4 >=,
	OPERATOR 5 >;

CREATE OPERATOR CLASS int4_ops
	DEFAULT FOR TYPE int4 USING ivfpq FAMILY integer_ops AS
	OPERATOR 1 <,
	OPERATOR 2 <=,
	OPERATOR 3 =,
	OPERATOR 4 >=,
	OPERATOR 5 >;

CREATE OPERATOR CLASS int8_ops
	DEFAULT FOR TYPE int8 USING ivfpq FAMILY integer_ops AS
	OPERATOR 1 <,
	OPERATOR 2 <=,
	OPERATOR 3 =,
	OPERATOR 4 >=,
	OPERATOR 5 >;

ALTER OPERATOR FAMILY integer_ops USING ivfpq ADD
	OPERATOR 1 < (int2, int4),
	OPERATOR 2 <= (int2, int4),
	OPERATOR 3 = (int2, int4),
	OPERATOR 4 >= (int2, int4),
	OPERATOR 5 > (int2, int4);

ALTER OPERATOR FAMILY integer_ops USING ivfpq ADD
	OPERATOR 1 < (int2, int8),
	OPERATOR 2 <= (int2, int8),
	OPERATOR 3 = (int2, int8),
	OPERATOR 4 >= (int2, int8),
	OPERATOR 5 > (int2, int8);

ALTER OPERATOR FAMILY integer_ops USING ivfpq ADD
	OPERATOR 1 < (int4, int2),
	OPERATOR 2 <= (int4, int2),
	OPERATOR 3 = (int4, int2),
	OPERATOR 4 >= (int4, int2),
	OPERATOR 5 > (int4, int2);

ALTER OPERATOR FAMILY integer_ops USING ivfpq ADD
	OPERATOR 1 < (int4, int8),
	OPERATOR 2 <= (int4, int8),
	OPERATOR 3 = (int4, int8),
	OPERATOR 4 >= (int4, int8),
	OPERATOR 5 > (int4, int8);

ALTER OPERATOR FAMILY integer_ops USING ivfpq ADD
	OPERATOR 1 < (int8, int2),
	OPERATOR 2 <= (int8, int2),
	OPERATOR 3 = (int8, int2),
	OPERATOR 4 >= (int8, int2),
	OPERATOR 5 > (int8, int2);

ALTER OPERATOR FAMILY integer_ops USING ivfpq ADD
	OPERATOR 1 < (int8, int4),
	OPERATOR 2 <= (int8, int4),
	OPERATOR 3 = (int8, int4),
	OPERATOR 4 >= (int8, int4),
	OPERATOR 5 > (int8, int4);

CREATE OPERATOR FAMILY float_ops USING ivfpq;

CREATE OPERATOR CLASS float4_ops
	DEFAULT FOR TYPE float4 USING ivfpq FAMILY float_ops AS
	OPERATOR 1 <,
	OPERATOR 2 <=,
	OPERATOR 3 =,
	OPERATOR 4 >=,
	OPERATOR 5 >;

CREATE OPERATOR CLASS float8_ops
	DEFAULT FOR TYPE float8 USING ivfpq FAMILY float_ops AS
	OPERATOR 1 <,
	OPERATOR 2 <=,
	OPERATOR 3 =,
	OPERATOR 4 >=,
	OPERATOR 5 >;

ALTER OPERATOR FAMILY float_ops USING ivfpq ADD
	OPERATOR 1 < (float4, float8),
	OPERATOR 2 <= (float4, float8),
	OPERATOR 3 = (float4, float8),
	OPERATOR 4 >= (float4, float8),
	OPERATOR 5 > (float4, float8);

ALTER OPERATOR FAMILY float_ops USING ivfpq ADD
	OPERATOR 1 < (float8, float4),
	OPERATOR 2 <= (float8, float4),
	OPERATOR 3 = (float8, float4),
	OPERATOR 4 >= (float8, float4),
	OPERATOR 5 > (float8, float4);

CREATE OPERATOR FAMILY date_ops USING ivfpq;
CREATE OPERATOR CLASS date_ops
	DEFAULT FOR TYPE date USING ivfpq FAMILY date_ops AS
	OPERATOR 1 <,
	OPERATOR 2 <=,
	OPERATOR 3 =,
	OPERATOR 4 >=,
	OPERATOR 5 >;

CREATE OPERATOR FAMILY timestamp_ops USING ivfpq;
CREATE OPERATOR CLASS timestamp_ops
	DEFAULT FOR TYPE timestamp USING ivfpq FAMILY timestamp_ops AS
	OPERATOR 1 <,
	OPERATOR 2 <=,
	OPERATOR 3 =,
	OPERATOR 4 >=,
	OPERATOR 5 >;

CREATE OPERATOR FAMILY timestamptz_ops USING ivfpq;
CREATE OPERATOR CLASS timestamptz_ops
	DEFAULT FOR TYPE timestamptz USING ivfpq FAMILY timestamptz_ops AS
	OPERATOR 1 <,
	OPERATOR 2 <=,
	OPERATOR 3 =,
	OPERATOR 4 >=,
	OPERATOR 5 >;
