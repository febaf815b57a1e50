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

