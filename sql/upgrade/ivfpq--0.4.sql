\echo Use "CREATE EXTENSION ivfpq" to load this file. \quit

-- 10_vector.sql: the vector type (text and binary formats, operator names
-- and casts as in pgvector), its functions, operators, aggregates, and the
-- btree and hash operator classes.  Unlike pgvector the type uses STORAGE
-- main, so vectors stay inline in their heap rows and an index rerank reads
-- them without a TOAST lookup.

-- type

CREATE TYPE vector;

CREATE FUNCTION vector_in(cstring, oid, integer) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_out(vector) RETURNS cstring
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_typmod_in(cstring[]) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_typmod_out(integer) RETURNS cstring
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_recv(internal, oid, integer) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_send(vector) RETURNS bytea
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE vector (
	INPUT          = vector_in,
	OUTPUT         = vector_out,
	TYPMOD_IN      = vector_typmod_in,
	TYPMOD_OUT     = vector_typmod_out,
	RECEIVE        = vector_recv,
	SEND           = vector_send,
	INTERNALLENGTH = VARIABLE,
	ALIGNMENT      = int4,
	STORAGE        = main
);

COMMENT ON TYPE vector IS 'float4 vector of 1 to 16000 dimensions, pgvector-compatible';

-- functions

CREATE FUNCTION l2_distance(vector, vector) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_l2_squared_distance(vector, vector) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION inner_product(vector, vector) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_negative_inner_product(vector, vector) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- the same function under a shorter name
CREATE FUNCTION negative_inner_product(vector, vector) RETURNS float8
	AS 'MODULE_PATHNAME', 'vector_negative_inner_product'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION cosine_distance(vector, vector) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION l1_distance(vector, vector) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_dims(vector) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_norm(vector) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION l2_normalize(vector) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION subvector(vector, integer, integer) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_add(vector, vector) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_sub(vector, vector) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_mul(vector, vector) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_concat(vector, vector) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- comparison and hashing (for btree, hash, DISTINCT, GROUP BY, ORDER BY)

CREATE FUNCTION vector_lt(vector, vector) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_le(vector, vector) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_eq(vector, vector) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_ne(vector, vector) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_ge(vector, vector) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_gt(vector, vector) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_cmp(vector, vector) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_hash(vector) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_hash_extended(vector, bigint) RETURNS bigint
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- aggregates

CREATE FUNCTION vector_accum(double precision[], vector) RETURNS double precision[]
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_combine(double precision[], double precision[]) RETURNS double precision[]
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_avg(double precision[]) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE AGGREGATE avg(vector) (
	SFUNC       = vector_accum,
	STYPE       = double precision[],
	FINALFUNC   = vector_avg,
	COMBINEFUNC = vector_combine,
	INITCOND    = '{0}',
	PARALLEL    = SAFE
);

CREATE AGGREGATE sum(vector) (
	SFUNC       = vector_add,
	STYPE       = vector,
	COMBINEFUNC = vector_add,
	PARALLEL    = SAFE
);

-- casts

CREATE FUNCTION vector(vector, integer, boolean) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION array_to_vector(integer[], integer, boolean) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION array_to_vector(real[], integer, boolean) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION array_to_vector(double precision[], integer, boolean) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION array_to_vector(numeric[], integer, boolean) RETURNS vector
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vector_to_float4(vector, integer, boolean) RETURNS real[]
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE CAST (vector AS vector)
	WITH FUNCTION vector(vector, integer, boolean) AS IMPLICIT;

CREATE CAST (vector AS real[])
	WITH FUNCTION vector_to_float4(vector, integer, boolean) AS IMPLICIT;

CREATE CAST (integer[] AS vector)
	WITH FUNCTION array_to_vector(integer[], integer, boolean) AS ASSIGNMENT;

CREATE CAST (real[] AS vector)
	WITH FUNCTION array_to_vector(real[], integer, boolean) AS ASSIGNMENT;

CREATE CAST (double precision[] AS vector)
	WITH FUNCTION array_to_vector(double precision[], integer, boolean) AS ASSIGNMENT;

CREATE CAST (numeric[] AS vector)
	WITH FUNCTION array_to_vector(numeric[], integer, boolean) AS ASSIGNMENT;

-- operators

CREATE OPERATOR <-> (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = l2_distance,
	COMMUTATOR = '<->'
);

CREATE OPERATOR <#> (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_negative_inner_product,
	COMMUTATOR = '<#>'
);

CREATE OPERATOR <=> (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = cosine_distance,
	COMMUTATOR = '<=>'
);

CREATE OPERATOR + (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_add,
	COMMUTATOR = +
);

CREATE OPERATOR - (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_sub
);

CREATE OPERATOR * (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_mul,
	COMMUTATOR = *
);

CREATE OPERATOR || (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_concat
);

CREATE OPERATOR < (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_lt,
	COMMUTATOR = > , NEGATOR = >= ,
	RESTRICT = scalarltsel, JOIN = scalarltjoinsel
);

CREATE OPERATOR <= (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_le,
	COMMUTATOR = >= , NEGATOR = > ,
	RESTRICT = scalarlesel, JOIN = scalarlejoinsel
);

CREATE OPERATOR = (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_eq,
	COMMUTATOR = = , NEGATOR = <> ,
	RESTRICT = eqsel, JOIN = eqjoinsel,
	HASHES, MERGES
);

CREATE OPERATOR <> (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_ne,
	COMMUTATOR = <> , NEGATOR = = ,
	RESTRICT = neqsel, JOIN = neqjoinsel
);

CREATE OPERATOR >= (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_ge,
	COMMUTATOR = <= , NEGATOR = < ,
	RESTRICT = scalargesel, JOIN = scalargejoinsel
);

CREATE OPERATOR > (
	LEFTARG = vector, RIGHTARG = vector, PROCEDURE = vector_gt,
	COMMUTATOR = < , NEGATOR = <= ,
	RESTRICT = scalargtsel, JOIN = scalargtjoinsel
);

-- btree and hash operator classes

CREATE OPERATOR CLASS vector_ops
	DEFAULT FOR TYPE vector USING btree AS
	OPERATOR 1 < ,
	OPERATOR 2 <= ,
	OPERATOR 3 = ,
	OPERATOR 4 >= ,
	OPERATOR 5 > ,
	FUNCTION 1 vector_cmp(vector, vector);

CREATE OPERATOR CLASS vector_ops
	DEFAULT FOR TYPE vector USING hash AS
	OPERATOR 1 = ,
	FUNCTION 1 vector_hash(vector),
	FUNCTION 2 vector_hash_extended(vector, bigint);

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

-- 60_partitions.sql: managed time-partitioned tables.  ivfpq_manage registers
-- a table range-partitioned on a time column; ivfpq_rotate (scheduled by
-- pg_cron) creates the partitions ahead of time, each with its own ivfpq
-- index, and detaches and drops the partitions past retention; the
-- background worker finds sealed partitions with ivfpq_sealed_partitions.
--
-- Partition ranges are aligned to a fixed origin in UTC: intervals of days,
-- hours, minutes or seconds are bins of date_bin(interval, t, origin) with
-- origin Monday 2000-01-03 00:00 UTC ('1 day' starts at UTC midnight,
-- '7 days' on Mondays); intervals of whole months start on the first of a
-- month, counted from January 2000.  A timestamp (without time zone) or date
-- column is read as UTC.
--
-- Privileges: every function runs with the caller's rights, so only a role
-- that owns a table (or is a member of its owner) can manage or rotate it,
-- and partitions are created and dropped as that role.  The configuration
-- table is readable by everyone and written only through ivfpq_manage and
-- ivfpq_unmanage, whose one privileged step (ivfpq_partition_config_save /
-- _delete, SECURITY DEFINER) checks again that the session may act as the
-- table's owner.  So a stored configuration, which a superuser's pg_cron job
-- may later act on, can only ever have been written by the table's owner.
--
-- The extension is relocatable, so the functions find their own schema at
-- run time (pg_extension.extnamespace) and put it on a search_path that
-- their SET clause scopes to the call.

-- The configuration: one row per managed table.  The parent is a regclass,
-- so pg_dump writes it as a qualified name and a restore points the row at
-- the restored table (a raw oid would point at nothing).
CREATE TABLE ivfpq_partitioned_tables (
	parent regclass PRIMARY KEY,
	time_column name NOT NULL,			-- the range partition key
	partition_interval interval NOT NULL,	-- the range of one partition
	premake integer NOT NULL CHECK (premake BETWEEN 0 AND 1000),	-- partitions kept ahead of the current one
	retention interval CHECK (retention >= interval '0'),	-- drop partitions that ended this long ago; NULL keeps all
	vector_column name NOT NULL,		-- the column each partition's ivfpq index covers
	opclass name NOT NULL,				-- the ivfpq operator class of those indexes
	index_options text,					-- normalised WITH (...) contents of those indexes
	inherit_codebooks boolean NOT NULL DEFAULT true,	-- new partitions copy the newest trained index (codebooks_from)
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	filter_columns name[]				-- (0.4) columns after the vector in those indexes (filter columns); NULL: none
);
COMMENT ON TABLE ivfpq_partitioned_tables IS
	'tables whose daily (or other interval) partitions ivfpq_rotate maintains; written by ivfpq_manage and ivfpq_unmanage';
SELECT pg_catalog.pg_extension_config_dump('ivfpq_partitioned_tables', '');
GRANT SELECT ON ivfpq_partitioned_tables TO PUBLIC;

-- One row of what a rotation did.
CREATE TYPE ivfpq_rotation_action AS (
	parent regclass,
	action text,			-- created, indexed, detached, dropped, failed
	partition text,			-- qualified partition name
	range_from timestamptz,
	range_to timestamptz,
	detail text				-- the index built and where its codebooks came from, or the error
);

-- Holds the rotation lock of one managed table until the end of the
-- transaction: manage, unmanage and rotate of the same table take turns.
-- The key is (1769367152 = 'ivfp', the table's oid as int4).
CREATE FUNCTION ivfpq_partition_lock(parent regclass) RETURNS void
LANGUAGE sql VOLATILE AS $$
	SELECT pg_catalog.pg_advisory_xact_lock(1769367152,
		(parent::oid::bigint - CASE WHEN parent::oid::bigint >= 2147483648 THEN 4294967296 ELSE 0 END)::integer)
$$;

-- Start of the partition range that contains t (see the alignment above).
CREATE FUNCTION ivfpq_partition_start(t timestamptz, step interval) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
	step_months integer := pg_catalog.date_part('year', step)::integer * 12 + pg_catalog.date_part('month', step)::integer;
	utc timestamp := t AT TIME ZONE 'UTC';
	month_index integer;
BEGIN
	IF step_months = 0 THEN
		RETURN pg_catalog.date_bin(step, t, timestamptz '2000-01-03 00:00:00+00');
	END IF;
	month_index := (pg_catalog.date_part('year', utc)::integer - 2000) * 12 + pg_catalog.date_part('month', utc)::integer - 1;
	month_index := pg_catalog.floor(month_index::numeric / step_months)::integer * step_months;
	RETURN (timestamp '2000-01-01 00:00:00' + pg_catalog.make_interval(months => month_index)) AT TIME ZONE 'UTC';
END $$;

-- Why a partition interval is unusable for a key of this type, or NULL.
CREATE FUNCTION ivfpq_partition_interval_problem(step interval, key_type regtype) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
	step_months integer := pg_catalog.date_part('year', step)::integer * 12 + pg_catalog.date_part('month', step)::integer;
	rest interval := step - pg_catalog.make_interval(months => step_months);
	seconds numeric := pg_catalog.date_part('epoch', rest)::numeric;
BEGIN
	IF step IS NULL THEN
		RETURN 'the partition interval must not be NULL';
	ELSIF step_months <> 0 AND (step_months < 0 OR seconds <> 0) THEN
		RETURN pg_catalog.format('partition interval %s mixes months with days or time, or is negative', step);
	ELSIF step_months = 0 AND seconds <= 0 THEN
		RETURN pg_catalog.format('partition interval %s is not positive', step);
	ELSIF step_months = 0 AND seconds % 1 <> 0 THEN
		RETURN pg_catalog.format('partition interval %s is not a whole number of seconds', step);
	ELSIF step_months = 0 AND key_type = 'date'::regtype AND seconds % 86400 <> 0 THEN
		RETURN pg_catalog.format('partition interval %s is not a whole number of days, as a date column needs', step);
	END IF;
	RETURN NULL;
END $$;

-- base || suffix, with base shortened so the name fits in 63 bytes.
CREATE FUNCTION ivfpq_partition_identifier(base text, suffix text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
	WHILE pg_catalog.octet_length(base || suffix) > 63 AND base <> '' LOOP
		base := pg_catalog.left(base, -1);
	END LOOP;
	RETURN pg_catalog.left(base || suffix, 63);
END $$;

-- Name of the partition of parent starting at range_from: <parent>_pYYYYMMDD,
-- _pYYYYMM for intervals of months, _pYYYYMMDD_HH24MI[SS] below a day.
CREATE FUNCTION ivfpq_partition_name(parent regclass, range_from timestamptz, step interval) RETURNS text
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
	seconds numeric := pg_catalog.date_part('epoch', step)::numeric;
	pattern text;
BEGIN
	pattern := CASE WHEN pg_catalog.date_part('year', step) <> 0 OR pg_catalog.date_part('month', step) <> 0 THEN 'YYYYMM'
				   WHEN seconds % 86400 = 0 THEN 'YYYYMMDD'
				   WHEN seconds % 60 = 0 THEN 'YYYYMMDD"_"HH24MI'
				   ELSE 'YYYYMMDD"_"HH24MISS' END;
	RETURN ivfpq_partition_identifier(
		(SELECT c.relname::text FROM pg_catalog.pg_class c WHERE c.oid = parent),
		'_p' || pg_catalog.to_char(range_from AT TIME ZONE 'UTC', pattern));
END $$;

-- A range bound as the partition key's type writes it (UTC), for
-- CREATE TABLE ... FOR VALUES FROM (...) TO (...).
CREATE FUNCTION ivfpq_partition_literal(t timestamptz, key_type regtype) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
	SELECT CASE key_type
		WHEN 'timestamptz'::regtype THEN pg_catalog.to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'
		WHEN 'timestamp'::regtype THEN pg_catalog.to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
		ELSE pg_catalog.to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD') END
$$;

-- A range bound as pg_get_expr writes it ('...', MINVALUE, MAXVALUE), as
-- timestamptz.  Needs DateStyle ISO (the callers set it).
CREATE FUNCTION ivfpq_partition_bound_value(bound text, key_type regtype) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
	literal text;
BEGIN
	IF bound = 'MINVALUE' THEN
		RETURN '-infinity';
	ELSIF bound = 'MAXVALUE' THEN
		RETURN 'infinity';
	END IF;
	literal := pg_catalog.replace(pg_catalog.substr(bound, 2, pg_catalog.length(bound) - 2), '''''', '''');
	RETURN CASE key_type
		WHEN 'timestamptz'::regtype THEN literal::timestamptz
		WHEN 'timestamp'::regtype THEN literal::timestamp AT TIME ZONE 'UTC'
		ELSE literal::date::timestamp AT TIME ZONE 'UTC' END;
END $$;

-- Every partition of a table range-partitioned on one time column, with its
-- range as timestamptz (MINVALUE/MAXVALUE as -infinity/infinity); the
-- DEFAULT partition is not listed.  No rows for any other table.
CREATE FUNCTION ivfpq_partition_bounds(parent regclass,
	OUT partition regclass, OUT range_from timestamptz, OUT range_to timestamptz)
RETURNS SETOF record
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
	key_type regtype;
	child record;
BEGIN
	PERFORM pg_catalog.set_config('search_path',
		(SELECT pg_catalog.format('pg_catalog, %I, pg_temp', n.nspname)
		 FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
		 WHERE e.extname = 'ivfpq'), true);
	SELECT a.atttypid INTO key_type
	FROM pg_partitioned_table pt
	JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
	WHERE pt.partrelid = ivfpq_partition_bounds.parent AND pt.partstrat = 'r' AND pt.partnatts = 1
	  AND a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype);
	IF key_type IS NULL THEN
		RETURN;
	END IF;
	FOR child IN
		SELECT c.oid, regexp_match(pg_get_expr(c.relpartbound, c.oid),
								   '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') AS bound
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = ivfpq_partition_bounds.parent
	LOOP
		CONTINUE WHEN child.bound IS NULL;		-- the DEFAULT partition
		partition := child.oid;
		range_from := ivfpq_partition_bound_value(child.bound[1], key_type);
		range_to := ivfpq_partition_bound_value(child.bound[2], key_type);
		RETURN NEXT;
	END LOOP;
END $$;
COMMENT ON FUNCTION ivfpq_partition_bounds(regclass) IS
	'partitions of a table range-partitioned on a timestamptz, timestamp or date column, with their ranges';

-- index_options ('lists = 100, m = 16') as (name, value) pairs; an error
-- (22023) for anything else, so a stored option can never carry SQL.
CREATE FUNCTION ivfpq_partition_options(index_options text, OUT name text, OUT value text)
RETURNS SETOF record
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
	item text;
	parts text[];
	seen text[] := '{}';
BEGIN
	IF index_options IS NULL OR pg_catalog.btrim(index_options) = '' THEN
		RETURN;
	END IF;
	FOREACH item IN ARRAY pg_catalog.string_to_array(index_options, ',') LOOP
		parts := pg_catalog.regexp_match(item,
			'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:''([A-Za-z0-9_.+-]+)''|([A-Za-z0-9_.+-]+))\s*$');
		IF parts IS NULL THEN
			RAISE EXCEPTION 'invalid index option "%"', pg_catalog.btrim(item)
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'index_options holds the contents of WITH (...), for example ''lists = 100, m = 16''.';
		END IF;
		name := pg_catalog.lower(parts[1]);
		value := coalesce(parts[2], parts[3]);
		IF name = 'codebooks_from' THEN
			RAISE EXCEPTION 'index option codebooks_from cannot be set for managed partitions'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'ivfpq_rotate picks the newest trained partition; pass inherit_codebooks => false to train each partition on its own.';
		ELSIF name = ANY (seen) THEN
			RAISE EXCEPTION 'index option "%" given twice', name USING ERRCODE = 'invalid_parameter_value';
		END IF;
		seen := seen || name;
		RETURN NEXT;
	END LOOP;
END $$;

-- The trained ivfpq index whose centroids and codebooks a new index on
-- partition should copy (codebooks_from), or NULL: the newest older
-- partition of the same table with a valid, trained index on the managed
-- column with the managed operator class, preferring one trained on its
-- own rows over one that itself inherited.  NULL when the table's
-- inherit_codebooks is off or the partition has already ended (a sealed
-- partition trains on its own rows).  Callers set search_path/TimeZone.
CREATE FUNCTION ivfpq_partition_codebooks_source(partition regclass, now timestamptz) RETURNS regclass
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	config ivfpq_partitioned_tables;
	own record;
	source regclass;
BEGIN
	SELECT t.* INTO config FROM pg_inherits i JOIN ivfpq_partitioned_tables t ON t.parent = i.inhparent
	WHERE i.inhrelid = partition;
	IF NOT FOUND OR NOT config.inherit_codebooks THEN
		RETURN NULL;
	END IF;
	SELECT b.range_from, b.range_to INTO own FROM ivfpq_partition_bounds(config.parent) b WHERE b.partition = ivfpq_partition_codebooks_source.partition;
	IF NOT FOUND OR own.range_to <= now THEN
		RETURN NULL;
	END IF;
	SELECT x.indexrelid::regclass INTO source
	FROM ivfpq_partition_bounds(config.parent) b
	JOIN pg_index x ON x.indrelid = b.partition AND x.indisvalid AND x.indnatts = 1
	JOIN pg_class ic ON ic.oid = x.indexrelid
	JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'ivfpq'
	JOIN pg_attribute a ON a.attrelid = b.partition AND a.attnum = x.indkey[0] AND a.attname = config.vector_column
	JOIN pg_opclass oc ON oc.oid = x.indclass[0] AND oc.opcname = config.opclass AND oc.opcmethod = am.oid
	CROSS JOIN LATERAL ivfpq_index_stats(x.indexrelid::regclass) s
	WHERE b.range_to <= own.range_from AND s.trained
	ORDER BY s.inherited, b.range_from DESC
	LIMIT 1;
	RETURN source;
END $$;

-- Name of the ivfpq index rotation builds on a managed partition:
-- <partition>_<vector column>_ivfpq.
CREATE FUNCTION ivfpq_partition_index_name(partition regclass) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
	SELECT ivfpq_partition_identifier(c.relname::text, pg_catalog.left('_' || t.vector_column || '_ivfpq', 40))
	FROM pg_catalog.pg_class c
	JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid
	JOIN ivfpq_partitioned_tables t ON t.parent = i.inhparent
	WHERE c.oid = partition
$$;

-- Builds the ivfpq index of a managed partition, copying the codebooks of
-- ivfpq_partition_codebooks_source when there is one; if that copy fails
-- (say the source's lists or m no longer match the options), the index is
-- built without it and a NOTICE says why.  Returns "index NAME" and where
-- its codebooks came from.
CREATE FUNCTION ivfpq_partition_create_index(partition regclass, now timestamptz) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	source regclass := ivfpq_partition_codebooks_source(partition, now);
	index_name text := pg_catalog.format('%I', ivfpq_partition_index_name(partition));
	problem text;
BEGIN
	IF source IS NOT NULL THEN
		BEGIN
			EXECUTE ivfpq_partition_index_ddl(partition, source);
			RETURN pg_catalog.format('index %s, codebooks from %s', index_name, source);
		EXCEPTION WHEN data_exception OR object_not_in_prerequisite_state OR undefined_object OR wrong_object_type THEN
			GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
			RAISE NOTICE 'index of partition % built without codebooks from %: %', partition, source, problem;
		END;
	END IF;
	EXECUTE ivfpq_partition_index_ddl(partition);
	RETURN pg_catalog.format('index %s', index_name);
END $$;

-- True when the partition has an ivfpq index on the managed column.
CREATE FUNCTION ivfpq_partition_has_index(partition regclass, vector_column name) RETURNS boolean
LANGUAGE sql STABLE AS $$
	SELECT EXISTS (
		SELECT 1 FROM pg_catalog.pg_index x
		JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid
		JOIN pg_catalog.pg_am am ON am.oid = ic.relam AND am.amname = 'ivfpq'
		JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
		WHERE x.indrelid = partition AND a.attname = vector_column)
$$;

-- Errors unless the current role may act as the owner of the table (42501).
CREATE FUNCTION ivfpq_partition_check_owner(parent regclass) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF NOT coalesce(pg_catalog.pg_has_role(current_user,
			(SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = parent), 'USAGE'), false) THEN
		RAISE EXCEPTION 'must be owner of table %', parent USING ERRCODE = 'insufficient_privilege';
	END IF;
END $$;

-- Deletes one configuration row; returns whether there was one.  SECURITY
-- DEFINER like ivfpq_partition_config_save.  A row whose table no longer
-- exists may be deleted by anyone.
CREATE FUNCTION ivfpq_partition_config_delete(parent regclass) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	schema_name text := (SELECT n.nspname FROM pg_catalog.pg_extension e
						 JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'ivfpq');
	owner oid := (SELECT c.relowner FROM pg_class c WHERE c.oid = parent);
	deleted integer;
BEGIN
	IF owner IS NOT NULL AND NOT pg_has_role(session_user, owner, 'MEMBER') THEN
		RAISE EXCEPTION 'must be owner of table %', parent USING ERRCODE = 'insufficient_privilege';
	END IF;
	EXECUTE format('DELETE FROM %I.ivfpq_partitioned_tables WHERE parent = $1', schema_name) USING parent;
	GET DIAGNOSTICS deleted = ROW_COUNT;
	RETURN deleted > 0;
END $$;

-- One table's rotation at now, under its lock: (1) detach and drop the
-- partitions whose range ended at or before now - retention (never one
-- that has not ended); (2) build the ivfpq index of any partition that
-- lacks one (adopted, or made by hand); (3) create the partition containing
-- now and premake more after it, each with its ivfpq index, unless a
-- partition already covers part of that range.  Callers check privileges and set search_path/TimeZone.
CREATE FUNCTION ivfpq_rotate_table(table_oid regclass, now timestamptz) RETURNS SETOF ivfpq_rotation_action
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	config ivfpq_partitioned_tables;
	key_type regtype;
	schema_name name;
	owner oid;
	result ivfpq_rotation_action;
	old record;
	step_start timestamptz;
	new_from timestamptz;
	new_to timestamptz;
	partition_name text;
	new_partition regclass;
	k integer;
BEGIN
	PERFORM ivfpq_partition_lock(table_oid);
	SELECT t.* INTO config FROM ivfpq_partitioned_tables t WHERE t.parent = table_oid;
	IF NOT FOUND THEN
		RETURN;		-- unmanaged meanwhile
	END IF;
	SELECT c.relnamespace::regnamespace::name, c.relowner INTO schema_name, owner FROM pg_class c WHERE c.oid = table_oid;
	SELECT a.atttypid INTO key_type
	FROM pg_partitioned_table pt JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
	WHERE pt.partrelid = table_oid AND pt.partstrat = 'r' AND pt.partnatts = 1 AND a.attname = config.time_column;
	IF key_type IS NULL THEN
		RAISE EXCEPTION 'table % is no longer range-partitioned on column "%"', table_oid, config.time_column
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Run ivfpq_unmanage and ivfpq_manage again.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = table_oid AND a.attname = config.vector_column
				   AND a.attnum > 0 AND NOT a.attisdropped) THEN
		RAISE EXCEPTION 'managed vector column "%" of table % no longer exists', config.vector_column, table_oid
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Run ivfpq_manage again naming the vector column.';
	END IF;
	result.parent := table_oid;

	-- (1) retention
	IF config.retention IS NOT NULL THEN
		FOR old IN
			SELECT b.partition, b.range_from, b.range_to,
				   format('%I.%I', n.nspname, c.relname) AS qualified
			FROM ivfpq_partition_bounds(table_oid) b
			JOIN pg_class c ON c.oid = b.partition AND c.relkind IN ('r', 'p')
			JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE b.range_to <= LEAST(now - config.retention, now)
			ORDER BY b.range_from
		LOOP
			-- a concurrent rotation dropped it after this transaction's snapshot
			CONTINUE WHEN to_regclass(old.qualified) IS NULL;
			-- indexes that copied their codebooks from this partition's must
			-- not name a dropped index (a dump would not restore)
			PERFORM ivfpq_partition_forget_source(table_oid, old.partition);
			EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', table_oid, old.partition);
			result := ROW(table_oid, 'detached', old.qualified, old.range_from, old.range_to, NULL)::ivfpq_rotation_action;
			RETURN NEXT result;
			EXECUTE format('DROP TABLE %s', old.partition);
			result := ROW(table_oid, 'dropped', old.qualified, old.range_from, old.range_to, NULL)::ivfpq_rotation_action;
			RETURN NEXT result;
		END LOOP;
	END IF;

	-- (2) partitions without an ivfpq index (adopted, or made by hand)
	FOR old IN
		SELECT b.partition, b.range_from, b.range_to, format('%I.%I', n.nspname, c.relname) AS qualified
		FROM ivfpq_partition_bounds(table_oid) b
		JOIN pg_class c ON c.oid = b.partition AND c.relkind = 'r'
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE NOT ivfpq_partition_has_index(b.partition, config.vector_column)
		ORDER BY b.range_from
	LOOP
		result := ROW(table_oid, 'indexed', old.qualified, old.range_from, old.range_to,
					  ivfpq_partition_create_index(old.partition, now))::ivfpq_rotation_action;
		RETURN NEXT result;
	END LOOP;

	-- (3) the current partition and premake more
	step_start := ivfpq_partition_start(now, config.partition_interval);
	FOR k IN 0 .. config.premake LOOP
		new_from := step_start + config.partition_interval * k;
		new_to := new_from + config.partition_interval;
		CONTINUE WHEN EXISTS (SELECT 1 FROM ivfpq_partition_bounds(table_oid) b
							  WHERE b.range_from < new_to AND b.range_to > new_from);
		partition_name := ivfpq_partition_name(table_oid, new_from, config.partition_interval);
		BEGIN
			EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
						   schema_name, partition_name, table_oid,
						   ivfpq_partition_literal(new_from, key_type), ivfpq_partition_literal(new_to, key_type));
		EXCEPTION
			-- A concurrent rotation made it after this transaction's snapshot
			-- (REPEATABLE READ): the name now resolves to a partition of this
			-- table (pg_partition_ancestors reads the latest catalog).
			WHEN duplicate_table THEN
				CONTINUE WHEN table_oid IN (SELECT a.relid FROM pg_partition_ancestors(
					to_regclass(format('%I.%I', schema_name, partition_name))) a);
				RAISE;
			WHEN invalid_object_definition THEN		-- overlaps another partition
				CONTINUE WHEN EXISTS (SELECT 1 FROM ivfpq_partition_bounds(table_oid) b
									  WHERE b.range_from < new_to AND b.range_to > new_from);
				RAISE;
		END;
		new_partition := format('%I.%I', schema_name, partition_name)::regclass;
		IF (SELECT c.relowner FROM pg_class c WHERE c.oid = new_partition) <> owner THEN
			-- made by a member of the owning role (say a pg_cron job's owner)
			EXECUTE format('ALTER TABLE %s OWNER TO %I', new_partition, pg_get_userbyid(owner));
		END IF;
		result := ROW(table_oid, 'created', format('%I.%I', schema_name, partition_name), new_from, new_to,
					  ivfpq_partition_create_index(new_partition, now))::ivfpq_rotation_action;
		RETURN NEXT result;
	END LOOP;
END $$;

-- ivfpq_rotate_table in a subtransaction: on failure, nothing of it stays,
-- a WARNING is logged and one 'failed' row carries the error.
CREATE FUNCTION ivfpq_rotate_table_or_warn(table_oid regclass, now timestamptz)
RETURNS SETOF ivfpq_rotation_action
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	done ivfpq_rotation_action[];
	failure ivfpq_rotation_action;
BEGIN
	BEGIN
		-- collected first: rows returned before an error could not be taken back
		SELECT array_agg(r) INTO done FROM ivfpq_rotate_table(table_oid, now) r;
	EXCEPTION WHEN OTHERS THEN
		failure := ROW(table_oid, 'failed', NULL, NULL, NULL, SQLERRM)::ivfpq_rotation_action;
		RAISE WARNING 'ivfpq_rotate: rotation of table % failed: %', table_oid, SQLERRM;
		RETURN NEXT failure;
		RETURN;
	END;
	RETURN QUERY SELECT * FROM unnest(done);
END $$;

-- Before a partition is dropped: indexes of the same table that copied
-- their codebooks from its index forget the source (ALTER INDEX ... RESET
-- (codebooks_from)); their own copy of the codebooks stays.
CREATE FUNCTION ivfpq_partition_forget_source(parent regclass, partition regclass) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	inheritor regclass;
BEGIN
	FOR inheritor IN
		SELECT ic.oid::regclass
		FROM ivfpq_partition_bounds(parent) b
		JOIN pg_index x ON x.indrelid = b.partition
		JOIN pg_class ic ON ic.oid = x.indexrelid
		CROSS JOIN LATERAL pg_options_to_table(ic.reloptions) o
		WHERE o.option_name = 'codebooks_from'
		  AND to_regclass(o.option_value) IN (SELECT y.indexrelid FROM pg_index y
									  WHERE y.indrelid = ivfpq_partition_forget_source.partition)
	LOOP
		EXECUTE format('ALTER INDEX %s RESET (codebooks_from)', inheritor);
	END LOOP;
END $$;

-- ivfpq_rotate: the maintenance step pg_cron runs.  For the given managed
-- table, or every managed table the current role owns: detach and drop
-- partitions past retention, create partitions up to premake intervals
-- ahead of the one containing now (each with its ivfpq index), and index
-- partitions that lack one.  Returns one row per action; a second call
-- with the same now returns none.  Concurrent calls wait for each other.
-- Without a table, a failure on one table is a WARNING and a 'failed' row
-- and the other tables are still rotated; with a table, it is an error.
CREATE FUNCTION ivfpq_rotate(parent regclass DEFAULT NULL, now timestamptz DEFAULT pg_catalog.now())
RETURNS SETOF ivfpq_rotation_action
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
	table_oid regclass;
BEGIN
	PERFORM pg_catalog.set_config('search_path',
		(SELECT pg_catalog.format('pg_catalog, %I, pg_temp', n.nspname)
		 FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
		 WHERE e.extname = 'ivfpq'), true);
	IF now IS NULL THEN
		RAISE EXCEPTION 'now must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	ELSIF NOT isfinite(now) THEN
		RAISE EXCEPTION 'now must be finite, not %', now USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF parent IS NOT NULL THEN
		IF NOT EXISTS (SELECT 1 FROM ivfpq_partitioned_tables t WHERE t.parent = ivfpq_rotate.parent) THEN
			RAISE EXCEPTION 'table % is not managed by ivfpq', parent
				USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Register it with ivfpq_manage.';
		END IF;
		PERFORM ivfpq_partition_check_owner(parent);
		RETURN QUERY SELECT * FROM ivfpq_rotate_table(ivfpq_rotate.parent, ivfpq_rotate.now);
		RETURN;
	END IF;
	FOR table_oid IN
		SELECT t.parent FROM ivfpq_partitioned_tables t JOIN pg_class c ON c.oid = t.parent
		WHERE pg_has_role(current_user, c.relowner, 'USAGE')
		ORDER BY t.parent::text
	LOOP
		RETURN QUERY SELECT * FROM ivfpq_rotate_table_or_warn(table_oid, now);
	END LOOP;
END $$;
COMMENT ON FUNCTION ivfpq_rotate(regclass, timestamptz) IS
	'create partitions ahead, drop partitions past retention, index partitions that lack an ivfpq index; one row per action';

-- ivfpq_unmanage: forget a managed table's configuration.  Its partitions,
-- data and indexes stay as they are.
CREATE FUNCTION ivfpq_unmanage(parent regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM pg_catalog.set_config('search_path',
		(SELECT pg_catalog.format('pg_catalog, %I, pg_temp', n.nspname)
		 FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
		 WHERE e.extname = 'ivfpq'), true);
	IF parent IS NULL THEN
		RAISE EXCEPTION 'parent must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = parent) THEN
		PERFORM ivfpq_partition_check_owner(parent);
		PERFORM ivfpq_partition_lock(parent);
	END IF;
	IF NOT ivfpq_partition_config_delete(parent) THEN
		RAISE EXCEPTION 'table % is not managed by ivfpq', parent USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
END $$;
COMMENT ON FUNCTION ivfpq_unmanage(regclass) IS
	'stop managing a table''s partitions; nothing is dropped';

-- Every partition of the managed tables with its range and its ivfpq
-- index on the managed column (one row per such index; index NULL when the
-- partition has none yet).  For the background worker and for people.
CREATE FUNCTION ivfpq_partitions(parent_table regclass DEFAULT NULL,
	OUT parent regclass, OUT partition regclass, OUT range_from timestamptz, OUT range_to timestamptz,
	OUT index regclass)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
	PERFORM pg_catalog.set_config('search_path',
		(SELECT pg_catalog.format('pg_catalog, %I, pg_temp', n.nspname)
		 FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
		 WHERE e.extname = 'ivfpq'), true);
	RETURN QUERY
	SELECT t.parent, b.partition, b.range_from, b.range_to, ix.indexrelid::regclass
	FROM ivfpq_partitioned_tables t
	JOIN pg_class pc ON pc.oid = t.parent
	CROSS JOIN LATERAL ivfpq_partition_bounds(t.parent) b
	LEFT JOIN LATERAL (
		SELECT x.indexrelid FROM pg_index x
		JOIN pg_class ic ON ic.oid = x.indexrelid
		JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'ivfpq'
		JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
		WHERE x.indrelid = b.partition AND a.attname = t.vector_column AND x.indisvalid) ix ON true
	WHERE $1 IS NULL OR t.parent = $1
	ORDER BY t.parent::text, b.range_from, ix.indexrelid;
END $$;
COMMENT ON FUNCTION ivfpq_partitions(regclass) IS
	'partitions of the managed tables with their ranges and ivfpq indexes';

-- The managed partitions whose range has ended at now, with their ivfpq
-- index: what the background worker considers for training on the
-- partition's own rows (it reads each index's metapage to decide).
CREATE FUNCTION ivfpq_sealed_partitions(now timestamptz DEFAULT pg_catalog.now(),
	OUT parent regclass, OUT partition regclass, OUT range_from timestamptz, OUT range_to timestamptz,
	OUT index regclass)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
	PERFORM pg_catalog.set_config('search_path',
		(SELECT pg_catalog.format('pg_catalog, %I, pg_temp', n.nspname)
		 FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
		 WHERE e.extname = 'ivfpq'), true);
	IF $1 IS NULL THEN
		RAISE EXCEPTION 'now must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY SELECT p.parent, p.partition, p.range_from, p.range_to, p.index
	FROM ivfpq_partitions() p WHERE p.range_to <= $1 AND p.index IS NOT NULL;
END $$;
COMMENT ON FUNCTION ivfpq_sealed_partitions(timestamptz) IS
	'managed partitions whose range has ended, with their ivfpq index (for the background worker)';
-- 61_partition_config.sql: what a managed table's configuration says and
-- how its partitions' indexes are written (ivfpq_manage, the configuration
-- row, the CREATE INDEX of a partition).  Version 0.4 added filter columns
-- to them; the upgrade script replaces them from this file.

-- The one place that writes CREATE INDEX for a managed partition: an ivfpq
-- index named <partition>_<column>_ivfpq on the managed column, then the
-- managed filter columns, with the managed operator class and options, plus
-- codebooks_from when given.  Callers set search_path.
CREATE FUNCTION ivfpq_partition_index_ddl(partition regclass, codebooks_from regclass DEFAULT NULL) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
	config ivfpq_partitioned_tables;
	index_name text;
	opclass_name text;
	options text;
BEGIN
	SELECT t.* INTO STRICT config FROM pg_inherits i JOIN ivfpq_partitioned_tables t ON t.parent = i.inhparent
	WHERE i.inhrelid = partition;
	index_name := ivfpq_partition_index_name(partition);
	SELECT format('%I.%I', n.nspname, oc.opcname) INTO STRICT opclass_name
	FROM pg_opclass oc JOIN pg_namespace n ON n.oid = oc.opcnamespace JOIN pg_am am ON am.oid = oc.opcmethod
	WHERE am.amname = 'ivfpq' AND oc.opcname = config.opclass AND oc.opcintype = (
		SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = config.parent AND a.attname = config.vector_column)
	ORDER BY oc.oid LIMIT 1;
	SELECT string_agg(format('%I = %L', o.name, o.value), ', ') INTO options
	FROM ivfpq_partition_options(config.index_options) o;
	IF codebooks_from IS NOT NULL THEN
		options := concat_ws(', ', options, format('codebooks_from = %L',
			(SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			 WHERE c.oid = codebooks_from)));
	END IF;
	RETURN format('CREATE INDEX %I ON %s USING ivfpq (%I %s%s)%s', index_name, partition, config.vector_column,
				  opclass_name, (SELECT string_agg(format(', %I', f.name), '' ORDER BY f.n)
								 FROM unnest(config.filter_columns) WITH ORDINALITY AS f (name, n)),
				  CASE WHEN options IS NOT NULL THEN ' WITH (' || options || ')' ELSE '' END);
END $$;

-- Writes one configuration row (insert or update).  SECURITY DEFINER: the
-- configuration table is not writable by others; the session's user must
-- be able to act as the table's owner.
CREATE FUNCTION ivfpq_partition_config_save(config ivfpq_partitioned_tables) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	schema_name text := (SELECT n.nspname FROM pg_catalog.pg_extension e
						 JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'ivfpq');
BEGIN
	IF NOT coalesce(pg_has_role(session_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = config.parent), 'MEMBER'), false) THEN
		RAISE EXCEPTION 'must be owner of table %', config.parent USING ERRCODE = 'insufficient_privilege';
	END IF;
	EXECUTE format('INSERT INTO %I.ivfpq_partitioned_tables AS t SELECT ($1).*
					ON CONFLICT (parent) DO UPDATE SET time_column = excluded.time_column,
						partition_interval = excluded.partition_interval, premake = excluded.premake,
						retention = excluded.retention, vector_column = excluded.vector_column,
						opclass = excluded.opclass, index_options = excluded.index_options,
						inherit_codebooks = excluded.inherit_codebooks,
						filter_columns = excluded.filter_columns', schema_name)
		USING config;
END $$;

-- ivfpq_manage: register (or re-configure) a table range-partitioned on a
-- timestamptz, timestamp or date column, adopt its partitions and run a
-- first rotation at now, whose actions it returns.  filter_columns (0.4)
-- go after the vector column in every partition's index.
CREATE FUNCTION ivfpq_manage(parent regclass, time_column name, "interval" interval DEFAULT '1 day',
	premake integer DEFAULT 2, retention interval DEFAULT NULL, index_options text DEFAULT NULL,
	vector_column name DEFAULT NULL, opclass name DEFAULT 'vector_l2_ops',
	inherit_codebooks boolean DEFAULT true, now timestamptz DEFAULT pg_catalog.now(),
	filter_columns name[] DEFAULT NULL)
RETURNS SETOF ivfpq_rotation_action
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
	relation record;
	key record;
	vector_type oid;
	vector_columns name[];
	filter_column record;
	problem text;
BEGIN
	PERFORM pg_catalog.set_config('search_path',
		(SELECT pg_catalog.format('pg_catalog, %I, pg_temp', n.nspname)
		 FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
		 WHERE e.extname = 'ivfpq'), true);
	IF parent IS NULL OR time_column IS NULL THEN
		RAISE EXCEPTION 'parent and time_column must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	ELSIF now IS NULL OR NOT isfinite(now) THEN
		RAISE EXCEPTION 'now must be a finite time' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT c.relkind, c.relowner INTO relation FROM pg_class c WHERE c.oid = parent;
	PERFORM ivfpq_partition_check_owner(parent);
	IF relation.relkind <> 'p' THEN
		RAISE EXCEPTION 'table % is not partitioned', parent
			USING ERRCODE = 'wrong_object_type',
				  HINT = pg_catalog.format('Create it with PARTITION BY RANGE (%I).', time_column);
	END IF;
	SELECT a.attnum, a.atttypid::regtype AS type, pt.partstrat, pt.partnatts, pt.partattrs[0] AS key_attnum
	INTO key
	FROM pg_partitioned_table pt
	LEFT JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attname = time_column AND a.attnum > 0 AND NOT a.attisdropped
	WHERE pt.partrelid = parent;
	IF key.attnum IS NULL THEN
		RAISE EXCEPTION 'column "%" of table % does not exist', time_column, parent USING ERRCODE = 'undefined_column';
	ELSIF key.partstrat <> 'r' OR key.partnatts <> 1 OR key.key_attnum <> key.attnum THEN
		RAISE EXCEPTION 'table % is not range-partitioned on column "%" alone', parent, time_column
			USING ERRCODE = 'invalid_table_definition',
				  DETAIL = pg_catalog.format('Its partition key is %s.', pg_get_partkeydef(parent));
	ELSIF key.type NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN
		RAISE EXCEPTION 'column "%" of table % is of type %, not timestamptz, timestamp or date', time_column, parent, key.type
			USING ERRCODE = 'datatype_mismatch';
	END IF;
	problem := ivfpq_partition_interval_problem("interval", key.type);
	IF problem IS NOT NULL THEN
		RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value';
	ELSIF premake IS NULL OR premake < 0 OR premake > 1000 THEN
		RAISE EXCEPTION 'premake must be between 0 and 1000, not %', coalesce(premake::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF retention < interval '0' THEN
		RAISE EXCEPTION 'retention must not be negative, not %', retention USING ERRCODE = 'invalid_parameter_value';
	ELSIF inherit_codebooks IS NULL THEN
		RAISE EXCEPTION 'inherit_codebooks must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;

	-- the vector column: the one column of type vector, or the one named
	SELECT t.oid INTO vector_type FROM pg_type t JOIN pg_extension e ON e.extnamespace = t.typnamespace
	WHERE e.extname = 'ivfpq' AND t.typname = 'vector';
	SELECT array_agg(a.attname ORDER BY a.attnum) INTO vector_columns FROM pg_attribute a
	WHERE a.attrelid = parent AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = vector_type;
	IF vector_column IS NULL THEN
		IF vector_columns IS NULL THEN
			RAISE EXCEPTION 'table % has no column of type vector', parent USING ERRCODE = 'undefined_column';
		ELSIF cardinality(vector_columns) > 1 THEN
			RAISE EXCEPTION 'table % has % columns of type vector', parent, cardinality(vector_columns)
				USING ERRCODE = 'ambiguous_column',
					  HINT = pg_catalog.format('Name the one to index with vector_column => (one of %s).',
											   array_to_string(vector_columns, ', '));
		END IF;
		vector_column := vector_columns[1];
	ELSIF NOT vector_column = ANY (coalesce(vector_columns, '{}')) THEN
		RAISE EXCEPTION 'table % has no column "%" of type vector', parent, vector_column
			USING ERRCODE = 'undefined_column';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
				   WHERE am.amname = 'ivfpq' AND oc.opcname = opclass AND oc.opcintype = vector_type) THEN
		RAISE EXCEPTION 'operator class "%" does not exist for access method "ivfpq"', opclass
			USING ERRCODE = 'undefined_object';
	END IF;

	-- filter columns: columns of the table, once each, not the vector, of a type
	-- with a default ivfpq operator class (integers, floats, dates, timestamps)
	IF cardinality(filter_columns) = 0 THEN
		filter_columns := NULL;
	END IF;
	FOR filter_column IN
		SELECT f.name, f.n, a.atttypid::regtype AS type, a.attnum
		FROM unnest(filter_columns) WITH ORDINALITY AS f (name, n)
		LEFT JOIN pg_attribute a ON a.attrelid = parent AND a.attname = f.name AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY f.n
	LOOP
		IF filter_column.name IS NULL THEN
			RAISE EXCEPTION 'filter_columns must not contain NULL' USING ERRCODE = 'null_value_not_allowed';
		ELSIF filter_column.attnum IS NULL THEN
			RAISE EXCEPTION 'column "%" of table % does not exist', filter_column.name, parent
				USING ERRCODE = 'undefined_column';
		ELSIF filter_column.name = vector_column THEN
			RAISE EXCEPTION 'the vector column "%" cannot be a filter column', filter_column.name
				USING ERRCODE = 'invalid_parameter_value';
		ELSIF filter_column.name = ANY (filter_columns[1:filter_column.n - 1]) THEN
			RAISE EXCEPTION 'column "%" appears twice in filter_columns', filter_column.name
				USING ERRCODE = 'duplicate_column';
		ELSIF NOT EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
						  WHERE am.amname = 'ivfpq' AND oc.opcdefault AND oc.opcintype = filter_column.type) THEN
			RAISE EXCEPTION 'column "%" of table % is of type %, which cannot be a filter column',
				filter_column.name, parent, filter_column.type
				USING ERRCODE = 'datatype_mismatch',
					  HINT = 'Filter columns are smallint, integer, bigint, real, double precision, date, timestamp or timestamptz.';
		END IF;
	END LOOP;

	PERFORM ivfpq_partition_lock(parent);
	PERFORM ivfpq_partition_config_save(ROW(parent, time_column, "interval", premake, retention, vector_column,
		opclass, (SELECT string_agg(o.name || ' = ' || o.value, ', ') FROM ivfpq_partition_options(index_options) o),
		inherit_codebooks, pg_catalog.now(), filter_columns)::ivfpq_partitioned_tables);
	RETURN QUERY SELECT * FROM ivfpq_rotate_table(ivfpq_manage.parent, ivfpq_manage.now);
END $$;
COMMENT ON FUNCTION ivfpq_manage(regclass, name, interval, integer, interval, text, name, name, boolean, timestamptz, name[]) IS
	'manage a range-partitioned table: partitions per interval, each with an ivfpq index (on the vector column, then any filter_columns), created ahead and dropped after retention by ivfpq_rotate';


-- ivfpq_estimate_recall: the quality signal of an index.  Live rows of the
-- index's table, sampled at random, serve as queries; each query's 10 (k)
-- nearest other rows are found once through the index at the session's
-- current settings (ivfpq.probes, ivfpq.rerank) and once by exact search
-- (a sequential scan of that table), and the overlap is the recall@k.  A
-- falling value on a partition whose index was trained on other data (or on
-- earlier data) is the sign of drift that the background worker acts on.

CREATE FUNCTION ivfpq_estimate_recall(index regclass, queries integer DEFAULT 100, k integer DEFAULT 10,
	OUT recall double precision, OUT sampled integer, OUT elapsed interval)
LANGUAGE plpgsql VOLATILE
-- Each SET LOCAL below is undone when the function returns.
SET enable_seqscan = on SET enable_indexscan = on SET enable_bitmapscan = off
AS $$
DECLARE
	started timestamptz := clock_timestamp();
	table_oid oid;
	column_name name;
	operator_name name;
	row_count double precision;
	percent double precision;
	approx tid[];
	exact tid[];
	hits bigint := 0;
	wanted bigint := 0;		-- true neighbours found by exact search (k per query when enough rows)
	query record;
	index_sql text;		-- the k nearest rows other than the query row
	plan json;
BEGIN
	IF queries IS NULL OR queries < 1 OR queries > 100000 THEN
		RAISE EXCEPTION 'queries must be between 1 and 100000' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF k IS NULL OR k < 1 OR k > 1000 THEN
		RAISE EXCEPTION 'k must be between 1 and 1000' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT i.indrelid, a.attname, o.oprname
	INTO table_oid, column_name, operator_name
	FROM pg_catalog.pg_index i
	JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
	JOIN pg_catalog.pg_am am ON am.oid = c.relam AND am.amname = 'ivfpq'
	JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
	JOIN pg_catalog.pg_opclass oc ON oc.oid = i.indclass[0]
	JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopstrategy = 1
		AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype
	JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr
	WHERE i.indexrelid = index;
	IF NOT FOUND THEN
		RAISE EXCEPTION '"%" is not an ivfpq index', index USING ERRCODE = 'wrong_object_type';
	END IF;

	index_sql := format('SELECT array_agg(ctid) FROM (SELECT ctid FROM %s WHERE ctid <> $2 ORDER BY %I %s $1 LIMIT %s) s',
						table_oid::regclass, column_name, operator_name, k);
	SELECT greatest(c.reltuples, 0) INTO row_count FROM pg_catalog.pg_class c WHERE c.oid = table_oid;
	percent := CASE WHEN row_count < 1 THEN 100 ELSE least(100, 100.0 * queries * 4 / row_count) END;
	sampled := 0;
	FOR query IN EXECUTE format('SELECT ctid AS id, %I AS v FROM %s TABLESAMPLE BERNOULLI (%s) WHERE %I IS NOT NULL ORDER BY random() LIMIT %s',
								column_name, table_oid::regclass, percent, column_name, queries)
	LOOP
		SET LOCAL enable_seqscan = off;
		SET LOCAL enable_indexscan = on;
		IF sampled = 0 THEN
			-- The plan must use this very index, or the figure would describe another one.
			EXECUTE 'EXPLAIN (FORMAT JSON) ' || index_sql INTO plan USING query.v, query.id;
			IF position(format('"Index Name": "%s"', (SELECT relname FROM pg_catalog.pg_class WHERE oid = index))
						IN plan::text) = 0 THEN
				RAISE EXCEPTION 'the planner does not use index "%" for ORDER BY % % ...', index, column_name, operator_name
					USING ERRCODE = 'object_not_in_prerequisite_state',
						  HINT = 'Another index on the same column is preferred; run the estimate on that one.';
			END IF;
		END IF;
		EXECUTE index_sql INTO approx USING query.v, query.id;
		SET LOCAL enable_seqscan = on;
		SET LOCAL enable_indexscan = off;
		EXECUTE index_sql INTO exact USING query.v, query.id;	-- now a sequential scan
		hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
		wanted := wanted + coalesce(array_length(exact, 1), 0);
		sampled := sampled + 1;
	END LOOP;
	IF wanted = 0 THEN
		RAISE EXCEPTION 'table "%" has too few rows to estimate recall', table_oid::regclass
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	recall := hits::double precision / wanted;
	elapsed := clock_timestamp() - started;
END $$;
COMMENT ON FUNCTION ivfpq_estimate_recall(regclass, integer, integer) IS
	'recall@k of an ivfpq index at the current settings against exact search, on live rows of its table sampled as queries';

-- 70_worker.sql: what the background worker (src/ivfpq_worker.cpp) records
-- and the SQL side of its decisions.  The worker runs as a superuser in each
-- database named in ivfpq.worker_databases, with search_path set to the
-- extension's schema; these functions are its interface, not meant to be
-- called by hand (ivfpq_worker_status is).

-- One row per partition the worker has looked at: its ivfpq index, the last
-- build and the last recall estimate.  Keyed by partition: REINDEX
-- CONCURRENTLY gives the rebuilt index a new OID under the old name.
-- Runtime state: not dumped, rebuilt as the worker goes.
CREATE TABLE ivfpq_worker_state (
	partition regclass PRIMARY KEY,
	index regclass NOT NULL,
	phase text NOT NULL CHECK (phase IN ('building', 'done', 'failed', 'checked')),
	reason text,				-- why it was (re)built: sealed, inherited, untrained, drift
	started timestamptz,
	finished timestamptz,
	rows bigint,				-- index entries after the build
	error text,					-- the last failure, kept until a build succeeds
	attempts integer NOT NULL DEFAULT 0,	-- failures since the last success
	next_attempt timestamptz,	-- no retry before this
	recall double precision,	-- last recall@10 estimate (active partitions)
	recall_checked timestamptz
);

CREATE VIEW ivfpq_worker_status AS
SELECT pg_catalog.current_database() AS database, s.partition, s.index, s.phase, s.reason,
	   s.started, s.finished, s.rows, s.error, s.attempts, s.next_attempt, s.recall, s.recall_checked
FROM ivfpq_worker_state s;
COMMENT ON VIEW ivfpq_worker_status IS
	'what the ivfpq background worker did to each managed partition''s index: last build, errors, retries, recall estimates';

-- The worker is about to rebuild an index.  (Parameter names differ from the
-- table's columns: in SQL functions a column name wins.)
CREATE FUNCTION ivfpq_worker_begin(target regclass, why text) RETURNS void
LANGUAGE sql VOLATILE AS $$
	INSERT INTO ivfpq_worker_state AS s (partition, index, phase, reason, started)
	SELECT i.indrelid, i.indexrelid, 'building', why, pg_catalog.now()
	FROM pg_catalog.pg_index i WHERE i.indexrelid = target
	ON CONFLICT ON CONSTRAINT ivfpq_worker_state_pkey DO UPDATE
	SET index = excluded.index, phase = 'building', reason = excluded.reason,
		started = excluded.started, finished = NULL
$$;

-- A rebuild ended: done (failure NULL), or failed and to be retried after
-- ivfpq.worker_retry_delay.  target is the index as named after the build.
CREATE FUNCTION ivfpq_worker_end(target regclass, failure text) RETURNS void
LANGUAGE sql VOLATILE AS $$
	UPDATE ivfpq_worker_state s
	SET index = target,
		phase = CASE WHEN failure IS NULL THEN 'done' ELSE 'failed' END,
		finished = pg_catalog.now(),
		rows = CASE WHEN failure IS NULL THEN (SELECT st.rows FROM ivfpq_index_stats(target) st) ELSE s.rows END,
		error = failure,
		attempts = CASE WHEN failure IS NULL THEN 0 ELSE s.attempts + 1 END,
		next_attempt = CASE WHEN failure IS NULL THEN NULL
			ELSE pg_catalog.now() + pg_catalog.current_setting('ivfpq.worker_retry_delay')::interval END,
		-- a fresh build makes the last estimate stale; the next one waits a
		-- full ivfpq.recall_check_interval, so data the index cannot reach
		-- the threshold on is not retrained over and over
		recall = CASE WHEN failure IS NULL THEN NULL ELSE s.recall END,
		recall_checked = CASE WHEN failure IS NULL THEN pg_catalog.now() ELSE s.recall_checked END
	WHERE s.partition = (SELECT i.indrelid FROM pg_catalog.pg_index i WHERE i.indexrelid = target)
$$;

-- Invalid ivfpq indexes that an interrupted REINDEX CONCURRENTLY left on
-- managed partitions and that nobody is building right now.
CREATE FUNCTION ivfpq_worker_leftovers() RETURNS SETOF text
LANGUAGE sql VOLATILE AS $$
	SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
	FROM pg_catalog.pg_index i
	JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
	JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	JOIN pg_catalog.pg_am am ON am.oid = c.relam AND am.amname = 'ivfpq'
	WHERE NOT i.indisvalid
	  AND c.relname ~ '_cc(new|old)[0-9]*$'
	  AND i.indrelid IN (SELECT p.partition FROM ivfpq_partitions() p)
	  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
					  WHERE l.relation = c.oid AND l.pid <> pg_catalog.pg_backend_pid())
$$;

-- What the worker should rebuild next, if anything (zero or one row):
--	1. a sealed partition (its range has ended), oldest first, whose index is
--	   untrained, inherited (codebooks_from) or built before the range ended;
--	2. an active partition whose index is untrained though it holds rows, or
--	   whose recall@10 estimate (ivfpq_estimate_recall, at most every
--	   ivfpq.recall_check_interval) is below ivfpq.retrain_recall: drift.
-- A partition whose last build failed waits until its next_attempt.
CREATE FUNCTION ivfpq_worker_next(now timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (index regclass, reason text) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	p record;
	threshold double precision := pg_catalog.current_setting('ivfpq.retrain_recall')::double precision;
	check_every interval := pg_catalog.current_setting('ivfpq.recall_check_interval')::interval;
	estimate double precision;
	has_rows boolean;
	why text;
BEGIN
	-- forget partitions that were dropped (retention, by hand)
	DELETE FROM ivfpq_worker_state s
	WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = s.partition);

	FOR p IN
		SELECT w.partition, w.index, w.range_from, w.range_to, st.trained, st.inherited, st.built_at,
			   s.phase, s.next_attempt, s.recall_checked
		FROM ivfpq_partitions() w
		CROSS JOIN LATERAL ivfpq_index_stats(w.index) st
		LEFT JOIN ivfpq_worker_state s ON s.partition = w.partition
		WHERE w.index IS NOT NULL AND w.range_from <= now
		  AND (s.next_attempt IS NULL OR s.next_attempt <= now)
		ORDER BY w.range_to <= now DESC, w.range_to
	LOOP
		why := NULL;
		IF p.range_to <= now THEN
			why := CASE WHEN NOT p.trained THEN 'untrained'
						WHEN p.inherited THEN 'inherited'
						WHEN p.built_at IS NULL OR p.built_at < p.range_to THEN 'sealed' END;
			-- an empty sealed partition would only be rebuilt untrained again
			IF why IS NOT NULL AND NOT p.trained THEN
				EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %s)', p.partition) INTO STRICT has_rows;
				CONTINUE WHEN NOT has_rows;
			END IF;
		ELSIF NOT p.trained THEN
			EXECUTE pg_catalog.format('SELECT count(*) >= 1000 FROM (SELECT 1 FROM %s LIMIT 1000) s', p.partition)
				INTO STRICT has_rows;
			why := CASE WHEN has_rows THEN 'untrained' END;
		ELSIF threshold > 0 AND (p.recall_checked IS NULL OR p.recall_checked + check_every <= now) THEN
			BEGIN
				SELECT r.recall INTO estimate FROM ivfpq_estimate_recall(p.index, 50, 10) r;
			EXCEPTION WHEN OTHERS THEN
				RAISE LOG 'ivfpq worker: recall estimate of % failed: %', p.index, SQLERRM;
				estimate := NULL;
			END;
			INSERT INTO ivfpq_worker_state AS s (partition, index, phase, recall, recall_checked)
			VALUES (p.partition, p.index, 'checked', estimate, now)
			ON CONFLICT ON CONSTRAINT ivfpq_worker_state_pkey DO UPDATE
			SET index = excluded.index, recall = excluded.recall, recall_checked = excluded.recall_checked;
			why := CASE WHEN estimate < threshold THEN 'drift' END;
		END IF;
		IF why IS NOT NULL THEN
			index := p.index;
			reason := why;
			RETURN NEXT;
			RETURN;
		END IF;
	END LOOP;
END $$;
