
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
