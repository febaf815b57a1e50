
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
