# The background worker under failure: it retrains a sealed partition whose
# index was inherited, survives kill -9 of itself and of the postmaster in
# the middle of a build (the build completes after the restart and no
# invalid index remains), records errors (a cancel, too little
# maintenance_work_mem) in ivfpq_worker_status and retries them later,
# without holding up the other partitions.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'ivfpq'
ivfpq.worker_databases = 'postgres'
ivfpq.worker_naptime = 1
ivfpq.worker_retry_delay = 2
max_parallel_maintenance_workers = 0
jit = off
restart_after_crash = on
});
$node->start;

sub workers_running
{
	my ($count) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = $count FROM pg_stat_activity WHERE backend_type = 'ivfpq worker'");
}
ok(workers_running(1), 'one worker runs for the listed database');

$node->safe_psql('postgres', q{
CREATE EXTENSION ivfpq;
CREATE TABLE ev (id bigint, ts timestamptz NOT NULL, e vector(64)) PARTITION BY RANGE (ts);
});

# A sealed day with rows: 100k clustered vectors; builds take a few seconds.
sub add_day
{
	my ($day, $codebooks_from) = @_;
	my $name = "ev_d$day";
	my $from = sprintf('2026-01-%02d', $day);
	my $to = sprintf('2026-01-%02d', $day + 1);
	my $with = $codebooks_from ? "codebooks_from = '$codebooks_from'" : 'lists = 256';
	$node->safe_psql('postgres', qq{
CREATE TABLE $name PARTITION OF ev FOR VALUES FROM ('$from') TO ('$to');
INSERT INTO $name SELECT i, '$from'::timestamptz + (i % 1440) * interval '1 minute',
	ARRAY(SELECT (i % 50) * ($day % 3 + 1) + random() FROM generate_series(1, 64) d)::vector
	FROM generate_series(1, 100000) i;
CREATE INDEX ${name}_e_idx ON $name USING ivfpq (e) WITH ($with);
});
	return "${name}_e_idx";
}

sub stats
{
	my ($index) = @_;
	return $node->safe_psql('postgres',
		"SELECT trained, inherited, rows FROM ivfpq_index_stats('$index')");
}

sub wait_build_running
{
	my ($index) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'ivfpq worker' "
		  . "AND query = 'REINDEX INDEX CONCURRENTLY $index' AND state = 'active'");
}

sub wait_done
{
	my ($partition) = @_;
	return $node->poll_query_until('postgres',
		"SELECT phase = 'done' FROM ivfpq_worker_status WHERE partition = '$partition'::regclass");
}

my $no_invalid = "SELECT count(*) FROM pg_index WHERE NOT indisvalid";

# Day 1 trained on its own rows; manage the table (the worker only looks at
# managed tables).
my $d1 = add_day(1);
$node->safe_psql('postgres', "SELECT ivfpq_manage('ev', 'ts')");

# 1. kill -9 the worker in the middle of a build
$node->safe_psql('postgres', 'ALTER SYSTEM SET ivfpq.worker_enabled = off');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(workers_running(0), 'disabling stops the worker');
my $d2 = add_day(2, $d1);
is(stats($d2), "t|t|100000", 'day 2 starts with inherited codebooks');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ivfpq.worker_enabled');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(wait_build_running($d2), 'the worker rebuilds day 2');
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'ivfpq worker'");
kill 'KILL', $pid;
ok(wait_done('ev_d2'), 'after kill -9 of the worker, the build completes');
is(stats($d2), "t|f|100000", 'day 2 is trained on its own rows');
is($node->safe_psql('postgres', $no_invalid), '0', 'no invalid index remains');
like($node->safe_psql('postgres', "SELECT reason FROM ivfpq_worker_status WHERE partition = 'ev_d2'::regclass"),
	qr/inherited/, 'the status says why');

# 2. kill -9 the postmaster in the middle of a build
my $d3 = add_day(3, $d2);
ok(wait_build_running($d3), 'the worker rebuilds day 3');
my $postmaster = $node->{_pid};
$node->kill9;
for (my $try = 0; $try < 300 && kill(0, $postmaster); $try++)
{
	select(undef, undef, undef, 0.1);
}
# Orphaned backends hold the shared memory until they notice: retry the start.
my $started = 0;
for (my $try = 0; $try < 120 && !$started; $try++)
{
	$node->{_pid} = undef;    # a failed start leaves the dead postmaster's pid
	$started = $node->start(fail_ok => 1);
	sleep 1 unless $started;
}
ok($started, 'the server restarts after kill -9 of the postmaster');
ok(wait_done('ev_d3'), 'after kill -9 of the postmaster and a restart, the build completes');
is(stats($d3), "t|f|100000", 'day 3 is trained on its own rows');
is($node->safe_psql('postgres', $no_invalid), '0', 'no invalid index remains');

# 3. a cancel is an error like any other: recorded, then retried
my $d4 = add_day(4, $d3);
ok(wait_build_running($d4), 'the worker rebuilds day 4');
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE backend_type = 'ivfpq worker'");
ok( $node->poll_query_until('postgres',
		"SELECT error LIKE '%canceling statement%' AND attempts >= 1 FROM ivfpq_worker_status "
		  . "WHERE partition = 'ev_d4'::regclass"),
	'a cancelled build shows its error in the status view');
ok(wait_done('ev_d4'), 'and is retried until it succeeds');
is(stats($d4), "t|f|100000", 'day 4 is trained on its own rows');

# 4. an error is shown, does not block the other partitions, and is retried:
# day 5's index (built untrained while the day was empty, now lists = 60000)
# needs more memory than maintenance_work_mem; day 6 does not.
$node->safe_psql('postgres', 'ALTER SYSTEM SET ivfpq.worker_enabled = off');
$node->safe_psql('postgres', "ALTER SYSTEM SET maintenance_work_mem = '64MB'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(workers_running(0), 'worker stopped');
$node->safe_psql('postgres', q{
CREATE TABLE ev_d5 PARTITION OF ev FOR VALUES FROM ('2026-01-05') TO ('2026-01-06');
CREATE INDEX ev_d5_e_idx ON ev_d5 USING ivfpq (e) WITH (lists = 64);
ALTER INDEX ev_d5_e_idx SET (lists = 60000);
INSERT INTO ev_d5 SELECT i, '2026-01-05'::timestamptz + (i % 1440) * interval '1 minute',
	ARRAY(SELECT (i % 50) * 2 + random() FROM generate_series(1, 64) d)::vector
	FROM generate_series(1, 100000) i;
});
is(stats('ev_d5_e_idx'), "f|f|100000", 'day 5 has an untrained index');
my $d6 = add_day(6, $d4);
$node->safe_psql('postgres', 'ALTER SYSTEM RESET ivfpq.worker_enabled');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( $node->poll_query_until('postgres',
		"SELECT phase = 'failed' AND attempts >= 1 AND error LIKE 'memory required%maintenance_work_mem is 64 MB' "
		  . "FROM ivfpq_worker_status WHERE partition = 'ev_d5'::regclass"),
	'too little maintenance_work_mem is shown in the status view');
ok(wait_done('ev_d6'), 'the next partition is built meanwhile');
is(stats($d6), "t|f|100000", 'day 6 is trained on its own rows');
$node->safe_psql('postgres', 'ALTER INDEX ev_d5_e_idx SET (lists = 64)');
ok(wait_done('ev_d5'), 'the failed partition is retried, and succeeds once it fits');
is(stats('ev_d5_e_idx'), "t|f|100000", 'day 5 is trained on its own rows');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET maintenance_work_mem');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
is($node->safe_psql('postgres', $no_invalid), '0', 'no invalid index remains at the end');

# nothing lost: every row is still there and reachable through its index
is($node->safe_psql('postgres', 'SELECT count(*) FROM ev'), '600000', 'row count intact');

$node->stop;
done_testing();
