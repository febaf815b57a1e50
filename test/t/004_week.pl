# A week of a self-maintaining table in one run, then drift.
#
# Week: seven days with an explicit clock.  Each day rotation runs, 20000 rows
# arrive whose distribution shifts from day to day, a few are deleted, and a
# row inserted a moment ago is found through today's index (PQ order only, so
# it can only come from the index); then the day ends and the background
# worker retrains it on its own rows.  (Each day also holds one far outlier
# row, which once made PQ order meaningless through the 8-bit term tables.)
# At the end every sealed partition's
# index is trained on its own rows, recall@10 over the parent is at least
# 0.95, no row is lost, and retention has dropped the oldest day.
#
# Drift: today's partition starts with yesterday's codebooks; when its rows
# come from a shifted distribution the worker's recall estimate falls below
# ivfpq.retrain_recall, it retrains the partition during the day, and the
# estimate recovers.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('week');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'ivfpq'
ivfpq.worker_databases = 'postgres'
ivfpq.worker_enabled = off
ivfpq.worker_naptime = 1
ivfpq.recall_check_interval = 1
ivfpq.retrain_recall = 0.5
max_parallel_maintenance_workers = 0
jit = off
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub set_worker
{
	my ($on) = @_;
	sql("ALTER SYSTEM SET ivfpq.worker_enabled = " . ($on ? 'on' : 'off'));
	sql('SELECT pg_reload_conf()');
	return $node->poll_query_until('postgres',
		"SELECT count(*) = " . ($on ? 1 : 0) . " FROM pg_stat_activity WHERE backend_type = 'ivfpq worker'");
}

# The week ends today (UTC), so days before today are sealed for the worker.
my $today = sql("SELECT (now() AT TIME ZONE 'UTC')::date");
my @days = map { sql("SELECT ('$today'::date - " . (6 - $_) . ")::text") } 0 .. 6;

sql(q{
CREATE EXTENSION ivfpq;
CREATE TABLE ev (id bigint, at timestamptz NOT NULL, e vector(32)) PARTITION BY RANGE (at);
});
sql("SELECT count(*) FROM ivfpq_manage('ev', 'at', retention => '5 days', index_options => 'm = 16', "
	  . "now => '$days[0] 12:00+00')");

my $inserted = 0;
my $deleted = 0;
for my $d (0 .. 6)
{
	my $day = $days[$d];
	my $actions = sql("SELECT string_agg(action || ' ' || partition::text, ', ' ORDER BY range_from) "
		  . "FROM ivfpq_rotate('ev', now => '$day 12:00+00')");
	note("day $d ($day): $actions");

	# 20000 rows around 500 centres that move every day (tight clusters, so
	# the true neighbours are well defined)
	my $first = $d * 100000 + 1;
	my $last = $first + 19999;
	sql(qq{
SELECT setseed(0.$d);
INSERT INTO ev SELECT i, '$day 00:00+00'::timestamptz + (i % 86400) * interval '1 second',
	ARRAY(SELECT 3 * sin((i % 500) * dim * 1.3 + $d * 0.3) + random() - 0.5
		  FROM generate_series(1, 32) dim WHERE i > 0)::vector
	FROM generate_series($first, $last) i;
DELETE FROM ev WHERE id BETWEEN $first AND $first + 99;
});
	$inserted += 20000;
	$deleted += 100;

	# a row inserted a moment ago is found through today's index
	my $probe = $d * 100000 + 99999;
	sql("INSERT INTO ev VALUES ($probe, '$day 18:00+00', array_fill(-40 - $d, ARRAY[32])::vector)");
	$inserted += 1;
	my $knn = "SELECT id FROM ev WHERE at >= '$day' AND at < '$day'::date + 1 "
	  . "ORDER BY e <-> array_fill(-40 - $d, ARRAY[32])::vector LIMIT 1";
	my $plan = sql("SET enable_seqscan = off; EXPLAIN (COSTS OFF) $knn");
	like($plan, qr/Index Scan using ev_p\d+_e_ivfpq/, "day $d: today's query uses the partition's ivfpq index");
	is(sql("SET enable_seqscan = off; SET ivfpq.rerank = 0; $knn"), $probe,
		"day $d: a row inserted a moment ago comes out of the index");

	# the day ends: the worker retrains every sealed day that needs it
	next if $d == 6;
	ok(set_worker(1), "day $d: worker running");
	ok( $node->poll_query_until('postgres',
			"SELECT bool_and(s.trained AND NOT s.inherited AND s.built_at >= p.range_to) "
			  . "FROM ivfpq_partitions('ev') p, ivfpq_index_stats(p.index) s "
			  . "WHERE p.range_to <= '$days[$d]'::date + 1 AND p.range_to <= now()"),
		"day $d: every sealed day is trained on its own rows");
	ok(set_worker(0), "day $d: worker stopped");
}

# retention dropped the oldest day, and only that one
is(sql("SELECT count(*) FROM ivfpq_partitions('ev') WHERE range_to <= '$today'"), '5',
	'retention dropped the oldest day: five sealed days remain');
is(sql("SELECT count(*) FROM ev WHERE at < '$days[1]'"), '0', 'the oldest day is gone');
my $remaining = $inserted - $deleted - 20001 + 100;
is(sql('SELECT count(*) FROM ev'), $remaining, 'row counts match: nothing lost');
# (VACUUM skips index cleanup when few pages have dead rows: force it)
sql('VACUUM (INDEX_CLEANUP ON) ev');
is(sql("SELECT sum(s.rows) FROM ivfpq_partitions('ev') p, ivfpq_index_stats(p.index) s"), $remaining,
	'every row is in an index');
is( sql("SELECT count(*) FROM ivfpq_worker_status s JOIN ivfpq_partitions('ev') p ON p.partition = s.partition "
		  . "WHERE s.phase = 'done' AND p.range_to <= '$today' AND s.reason IN ('inherited', 'untrained', 'sealed')"),
	'5', 'the worker built each remaining sealed day');

# recall@10 over the parent at the documented settings (probes 10, rerank 100,
# 16-byte codes for 32 dimensions)
my $recall = sql(q{
CREATE TEMP TABLE q AS SELECT id, e FROM ev TABLESAMPLE BERNOULLI (1) REPEATABLE (7) LIMIT 60;
DO $$
DECLARE
	r record;
	approx bigint[];
	exact bigint[];
	hits int := 0;
	knn text := 'SELECT array_agg(id) FROM (SELECT id FROM ev ORDER BY e <-> $1 LIMIT 10) s';
BEGIN
	FOR r IN SELECT * FROM q LOOP
		SET LOCAL enable_seqscan = off;
		EXECUTE knn INTO approx USING r.e;
		SET LOCAL enable_seqscan = on;
		SET LOCAL enable_indexscan = off;
		EXECUTE knn INTO exact USING r.e;
		SET LOCAL enable_indexscan = on;
		hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
	END LOOP;
	PERFORM set_config('ivfpq_test.recall', (hits / (10.0 * (SELECT count(*) FROM q)))::text, false);
END $$;
SELECT current_setting('ivfpq_test.recall');
});
note("recall\@10 over the parent: $recall");
cmp_ok($recall, '>=', 0.95, 'recall@10 over the parent is at least 0.95');

# Drift: today's partition holds yesterday's codebooks; its rows come from a
# distribution they never saw.
my $drift_day = $days[6];
is(sql("SELECT inherited FROM ivfpq_partitions('ev') p, ivfpq_index_stats(p.index) s "
	  . "WHERE p.range_from = '$drift_day'"), 't', "today's index starts with inherited codebooks");
sql(qq{
INSERT INTO ev SELECT i, '$drift_day 06:00+00', ARRAY(SELECT 20 + 3 * cos((i % 500) * dim * 0.7) + random() - 0.5
	FROM generate_series(1, 32) dim WHERE i > 0)::vector FROM generate_series(900001, 960000) i;
ANALYZE ev;
});
my $today_index = sql("SELECT index FROM ivfpq_partitions('ev') WHERE range_from = '$drift_day'");
sql("ALTER SYSTEM SET ivfpq.probes = 2");
sql("ALTER SYSTEM SET ivfpq.rerank = 20");
sql('SELECT pg_reload_conf()');
my $before = sql("SET ivfpq.probes = 2; SET ivfpq.rerank = 20; SELECT recall FROM ivfpq_estimate_recall('$today_index', 60, 10)");
note("recall estimate of today's index before retraining: $before");
cmp_ok($before, '<', 0.5, 'the recall estimate falls under drift');
ok(set_worker(1), 'worker running');
ok( $node->poll_query_until('postgres',
		"SELECT reason = 'drift' AND phase = 'done' FROM ivfpq_worker_status WHERE index = '$today_index'::regclass"),
	'the worker retrains the drifting partition during the day');
my $after = sql("SET ivfpq.probes = 2; SET ivfpq.rerank = 20; SELECT recall FROM ivfpq_estimate_recall('$today_index', 60, 10)");
note("recall estimate after retraining: $after");
cmp_ok($after, '>', $before + 0.2, 'and the estimate recovers');
is(sql("SELECT inherited FROM ivfpq_index_stats('$today_index')"), 'f', "today's index is trained on its own rows");

$node->stop;
done_testing();
