
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
