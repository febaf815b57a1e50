# Shards with postgres_fdw: a coordinator whose table is hash-partitioned
# into foreign partitions on two shard servers, each shard with its own table
# and ivfpq index.  Rows inserted through the coordinator land on the shard
# their key hashes to; k-NN queries over the coordinator return the rows (ids,
# in order) one server holding all the rows returns with every list probed;
# the fan-out query of the README pushes ORDER BY ... LIMIT to every shard,
# queries them in parallel (Async Foreign Scan under an Append) and each shard
# answers from its ivfpq index; the plain ORDER BY ... LIMIT over the
# partitioned table and over a UNION ALL view of the foreign tables returns
# the same rows, but through a Merge Append of synchronous foreign scans
# without the remote LIMIT; settings reach the shards through the foreign
# server's libpq `options` (a SET on the coordinator does not); a stopped or a
# frozen shard is a clear error within connect_timeout, and queries work again
# once it is back; deletes through the coordinator reach the shards, whose own
# VACUUM removes the index entries.  The SQL is the README's ("More than one
# server"); keep the two in step.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $dim = 16;
my $lists = 10;
my $rows = 4000;
my $k = 10;

# Shards: a table and its ivfpq index, and a view that shows the settings a
# coordinator's session gets (missing_ok: the library may not be loaded yet).
my @shards;
for my $n (1, 2)
{
	my $shard = PostgreSQL::Test::Cluster->new("shard$n");
	$shard->init;
	$shard->append_conf('postgresql.conf',
		"listen_addresses = '127.0.0.1'\nmax_parallel_maintenance_workers = 0\nautovacuum = off\njit = off\n");
	$shard->start;
	$shard->safe_psql('postgres', qq{
		CREATE EXTENSION ivfpq;
		CREATE TABLE items (id bigint PRIMARY KEY, embedding vector($dim));
		CREATE VIEW ivfpq_settings AS
			SELECT current_setting('ivfpq.probes', true) AS probes,
			       current_setting('ivfpq.rerank', true) AS rerank;
	});
	push @shards, $shard;
}

my $coordinator = PostgreSQL::Test::Cluster->new('coordinator');
$coordinator->init;
$coordinator->append_conf('postgresql.conf', "jit = off\n");
$coordinator->start;

# The README's coordinator set-up, one server per shard.  connect_timeout
# bounds the wait for a shard that does not answer.  use_remote_estimate is
# off: the fan-out query's shape is fixed by its SQL, a remote estimate costs
# EXPLAIN round trips to every shard at each planning, and with it the
# planner may keep the LIMIT on the coordinator above a foreign scan that is
# then neither limited on the shard nor asynchronous.  At 2,000 rows a shard's
# planner prefers an exact sequential scan to the index; enable_seqscan = off
# (passed like any other setting) makes the shards answer from the index,
# which is what this test checks.
my $force_index = '-c enable_seqscan=off';
my $setup = qq{
	CREATE EXTENSION ivfpq;
	CREATE EXTENSION postgres_fdw;
	CREATE TABLE items (id bigint NOT NULL, embedding vector($dim)) PARTITION BY HASH (id);
};
for my $n (1, 2)
{
	my $port = $shards[ $n - 1 ]->port;
	my $remainder = $n - 1;
	$setup .= qq{
	CREATE SERVER shard$n FOREIGN DATA WRAPPER postgres_fdw
		OPTIONS (host '127.0.0.1', port '$port', dbname 'postgres',
		         extensions 'ivfpq', use_remote_estimate 'false', fetch_size '100',
		         async_capable 'true', connect_timeout '2',
		         options '-c ivfpq.probes=$lists -c ivfpq.rerank=1000 $force_index');
	CREATE USER MAPPING FOR CURRENT_USER SERVER shard$n OPTIONS (user 'postgres');
	CREATE FOREIGN TABLE items_shard$n PARTITION OF items
		FOR VALUES WITH (MODULUS 2, REMAINDER $remainder)
		SERVER shard$n OPTIONS (table_name 'items');
	CREATE FOREIGN TABLE ivfpq_settings_shard$n (probes text, rerank text)
		SERVER shard$n OPTIONS (table_name 'ivfpq_settings');
};
}
# The other layout the issue names: the foreign tables under a UNION ALL
# view instead of a partitioned table (no routing of inserts; reads only).
$setup .= q{
	CREATE VIEW items_union AS
		SELECT id, embedding FROM items_shard1
		UNION ALL
		SELECT id, embedding FROM items_shard2;
};
# The fan-out query: each shard's nearest k with ORDER BY ... LIMIT pushed to
# it, all shards at once (an Append runs its foreign scans asynchronously, a
# Merge Append does not: MATERIALIZED keeps the planner from merging the
# sorted branches), then the best k of the 2k candidates.
$setup .= q{
	CREATE FUNCTION items_nearest(query vector, k int DEFAULT 10)
	RETURNS TABLE (id bigint, distance float8)
	LANGUAGE sql STABLE AS $$
		WITH candidates AS MATERIALIZED (
			(SELECT s.id, s.embedding <-> query AS distance FROM items_shard1 s
			 ORDER BY s.embedding <-> query LIMIT k)
			UNION ALL
			(SELECT s.id, s.embedding <-> query AS distance FROM items_shard2 s
			 ORDER BY s.embedding <-> query LIMIT k))
		SELECT c.id, c.distance FROM candidates c ORDER BY c.distance LIMIT k
	$$;
};
$coordinator->safe_psql('postgres', $setup);

sub random_vector
{
	return '[' . join(',', map { sprintf('%.4f', rand()) } 1 .. $dim) . ']';
}

sub insert_rows
{
	my ($from, $to) = @_;
	$coordinator->safe_psql('postgres',
		"INSERT INTO items SELECT i, ARRAY(SELECT random() FROM generate_series(1, $dim) WHERE i > 0)::vector "
		  . "FROM generate_series($from, $to) i");
}

# Routing: the first rows go through the coordinator, then each shard builds
# its index (a bulk load, then CREATE INDEX, as on one server); later rows go
# through the index's insert path.
insert_rows(1, $rows / 2);
$_->safe_psql('postgres', "CREATE INDEX items_embedding_idx ON items USING ivfpq (embedding) WITH (lists = $lists, m = 8)")
  for @shards;
insert_rows($rows / 2 + 1, $rows);
$_->safe_psql('postgres', 'ANALYZE items') for @shards;
$coordinator->safe_psql('postgres', 'ANALYZE items');

my @shard_counts = map { $_->safe_psql('postgres', 'SELECT count(*) FROM items') } @shards;
is($shard_counts[0] + $shard_counts[1], $rows, 'every row inserted through the coordinator is on one shard');
cmp_ok($shard_counts[$_], '>', $rows / 4, "shard " . ($_ + 1) . " holds a fair share ($shard_counts[$_] rows)")
  for 0, 1;
for my $n (1, 2)
{
	my $ids = $shards[ $n - 1 ]->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM items');
	my $misplaced = $coordinator->safe_psql('postgres',
		"SELECT count(*) FROM unnest('{$ids}'::bigint[]) id "
		  . "WHERE NOT satisfies_hash_partition('items'::regclass, 2, " . ($n - 1) . ", id)");
	is($misplaced, '0', "every row on shard $n belongs to its hash partition");
	is($shards[ $n - 1 ]->safe_psql('postgres', "SELECT rows FROM ivfpq_index_stats('items_embedding_idx')"),
		$shard_counts[ $n - 1 ], "shard $n index holds each of its rows");
}

# Settings: the server's libpq options reach the shard sessions; a SET on the
# coordinator does not; ALTER SERVER takes effect in open sessions (the
# cached connection is replaced).
is($coordinator->safe_psql('postgres', 'SELECT probes || \'/\' || rerank FROM ivfpq_settings_shard1'),
	"$lists/1000", 'ivfpq.probes and ivfpq.rerank from the server options reach shard 1');
is($coordinator->safe_psql('postgres', 'SET ivfpq.probes = 1; SELECT probes FROM ivfpq_settings_shard2'),
	"$lists", 'SET ivfpq.probes on the coordinator does not reach the shard');
is($coordinator->safe_psql('postgres',
		"SELECT probes FROM ivfpq_settings_shard1; "
		  . "ALTER SERVER shard1 OPTIONS (SET options '-c ivfpq.probes=3'); SELECT probes FROM ivfpq_settings_shard1; "
		  . "ALTER SERVER shard1 OPTIONS (SET options '-c ivfpq.probes=$lists -c ivfpq.rerank=1000 $force_index'); "
		  . "SELECT probes FROM ivfpq_settings_shard1"),
	"$lists\n3\n$lists", 'ALTER SERVER ... OPTIONS (SET options ...) reaches the shard in the same session');
$shards[1]->safe_psql('postgres', 'ALTER ROLE postgres SET ivfpq.rerank = 500');
is($coordinator->safe_psql('postgres', 'SELECT rerank FROM ivfpq_settings_shard2'), '1000',
	'the server options win over ALTER ROLE ... SET on the shard');
$coordinator->safe_psql('postgres', "ALTER SERVER shard2 OPTIONS (SET options '-c ivfpq.probes=$lists $force_index')");
is($coordinator->safe_psql('postgres', 'SELECT rerank FROM ivfpq_settings_shard2'), '500',
	'without them ALTER ROLE ... SET on the shard applies');
$coordinator->safe_psql('postgres',
	"ALTER SERVER shard2 OPTIONS (SET options '-c ivfpq.probes=$lists -c ivfpq.rerank=1000 $force_index')");

# One server holding all the rows: a local copy on the coordinator with its
# own index, every list probed.  Its answers are also checked against exact
# search, so the comparison means something.
$coordinator->safe_psql('postgres', qq{
	CREATE TABLE items_all (id bigint PRIMARY KEY, embedding vector($dim));
	INSERT INTO items_all SELECT * FROM items;
	CREATE INDEX ON items_all USING ivfpq (embedding) WITH (lists = $lists, m = 8);
	ANALYZE items_all;
});

my $one_server = "SET enable_seqscan = off; SET ivfpq.probes = $lists; SET ivfpq.rerank = 1000; "
  . "SELECT string_agg(id::text, ',') FROM (SELECT id FROM items_all ORDER BY embedding <-> '%s' LIMIT $k) s";
my $exact = "SET enable_indexscan = off; "
  . "SELECT string_agg(id::text, ',') FROM (SELECT id FROM items_all ORDER BY embedding <-> '%s' LIMIT $k) s";
my $plain = "SELECT string_agg(id::text, ',') FROM (SELECT id FROM items ORDER BY embedding <-> '%s' LIMIT $k) s";
my $fanout = "SELECT string_agg(id::text, ',') FROM items_nearest('%s', $k)";
my $view = "SELECT string_agg(id::text, ',') FROM (SELECT id FROM items_union ORDER BY embedding <-> '%s' LIMIT $k) s";

sub compare_with_one_server
{
	my ($label) = @_;
	for my $i (1 .. 5)
	{
		my $query = random_vector();
		my $expected = $coordinator->safe_psql('postgres', sprintf($one_server, $query));
		is($coordinator->safe_psql('postgres', sprintf($exact, $query)), $expected,
			"$label, query $i: one server with every list probed equals exact search");
		is($coordinator->safe_psql('postgres', sprintf($fanout, $query)), $expected,
			"$label, query $i: the fan-out query over the shards returns the same ids in the same order");
		is($coordinator->safe_psql('postgres', sprintf($plain, $query)), $expected,
			"$label, query $i: ORDER BY ... LIMIT on the partitioned table returns the same ids in the same order");
		is($coordinator->safe_psql('postgres', sprintf($view, $query)), $expected,
			"$label, query $i: ORDER BY ... LIMIT on the UNION ALL view returns the same ids in the same order");
	}
}
compare_with_one_server('after inserts');

# The plan of the fan-out query: an Append (not a Merge Append) of
# asynchronous foreign scans, each shipping ORDER BY <-> ... LIMIT k.
my $query = random_vector();
my $plan = $coordinator->safe_psql('postgres', "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM items_nearest('$query', $k)");
note $plan;
for my $n (1, 2)
{
	like($plan, qr/Async Foreign Scan on public\.items_shard$n/, "shard $n is scanned asynchronously");
}
my @remote = $plan =~ /Remote SQL: (.*)/g;
is(scalar(grep { /FROM public\.items ORDER BY \(embedding OPERATOR\(public\.<->\) '\[[^\]]+\]'\) ASC NULLS LAST LIMIT ${k}::bigint$/ } @remote),
	2, 'both shards receive ORDER BY embedding <-> ... LIMIT 10')
  or diag join("\n", @remote);
unlike($plan, qr/Merge Append/, 'no Merge Append (which would query the shards one after the other)');

my $analyze = $coordinator->safe_psql('postgres',
	"EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) SELECT * FROM items_nearest('$query', $k)");
is(scalar(() = $analyze =~ /Async Foreign Scan on public\.items_shard\d \w+ \(actual rows=$k loops=1\)/g),
	2, "each shard returns $k rows to the coordinator")
  or diag $analyze;

# poll_query_until waits minutes; the statistics arrive within seconds.
sub wait_until
{
	my ($node, $sql) = @_;
	for (1 .. 30)
	{
		return 1 if $node->safe_psql('postgres', $sql) eq 't';
		sleep 1;
	}
	return 0;
}
my $index_scans = 'SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = \'items_embedding_idx\'';
my @scans_before = map { $_->safe_psql('postgres', "SELECT pg_stat_force_next_flush(); $index_scans") } @shards;
$coordinator->safe_psql('postgres', "SELECT * FROM items_nearest('$query', $k)");
for my $n (1, 2)
{
	my $shard = $shards[ $n - 1 ];
	ok(wait_until($shard, "SELECT ($index_scans) > $scans_before[$n - 1]"),
		"shard $n answered from its ivfpq index");
}

# The plain query on the partitioned table and on the UNION ALL view give
# the same rows (checked above) and, in PostgreSQL 15, the same plan: a Merge
# Append of synchronous foreign scans (one shard after the other), each with
# the remote ORDER BY but without the LIMIT, so each shard runs its index
# scan for a cursor batch (fetch_size rows), not k rows.  The view is
# flattened into an append relation like the partitions; postgres_fdw pushes
# a LIMIT only when the foreign scan is the whole query.
for my $relation ('items', 'items_union')
{
	my $plain_plan = $coordinator->safe_psql('postgres',
		"EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM $relation ORDER BY embedding <-> '$query' LIMIT $k");
	note $plain_plan;
	like($plain_plan, qr/Limit\n.*Merge Append/s, "$relation: the LIMIT stays on the coordinator above a Merge Append");
	unlike($plain_plan, qr/Async Foreign Scan/, "$relation: the foreign scans are not asynchronous");
	my @plain_remote = $plain_plan =~ /Remote SQL: (.*)/g;
	is(scalar(grep { /FROM public\.items ORDER BY \(embedding OPERATOR\(public\.<->\) '\[[^\]]+\]'\) ASC NULLS LAST$/ } @plain_remote),
		2, "$relation: both shards receive the ORDER BY, without a LIMIT")
	  or diag join("\n", @plain_remote);
}

# Deletes through the coordinator reach the shards.  VACUUM on the
# coordinator skips foreign partitions: each shard's own VACUUM (autovacuum
# there) removes the dead rows' index entries.
$coordinator->safe_psql('postgres', 'DELETE FROM items WHERE id % 3 = 0');
$coordinator->safe_psql('postgres', 'DELETE FROM items_all WHERE id % 3 = 0');
my $live = $coordinator->safe_psql('postgres', 'SELECT count(*) FROM items_all');
is($coordinator->safe_psql('postgres', 'SELECT count(*) FROM items'), $live, 'deletes through the coordinator');
is($shards[0]->safe_psql('postgres', 'SELECT count(*) FROM items WHERE id % 3 = 0')
	  + $shards[1]->safe_psql('postgres', 'SELECT count(*) FROM items WHERE id % 3 = 0'),
	0, 'the deleted rows are gone from both shards');
my ($ret, $stdout, $stderr) = $coordinator->psql('postgres', 'VACUUM items');
like($stderr, qr/skipping "items_shard1"/, 'VACUUM on the coordinator skips the foreign partitions');
my $index_rows = "SELECT rows FROM ivfpq_index_stats('items_embedding_idx')";
is($shards[0]->safe_psql('postgres', $index_rows), $shard_counts[0],
	'the dead rows are still in the shard index after the coordinator VACUUM');
for my $n (1, 2)
{
	my $shard = $shards[ $n - 1 ];
	$shard->safe_psql('postgres', 'VACUUM items');
	is($shard->safe_psql('postgres', $index_rows), $shard->safe_psql('postgres', 'SELECT count(*) FROM items'),
		"VACUUM on shard $n removes the dead rows from its index");
}
compare_with_one_server('after deletes and VACUUM');

# A shard that does not answer: its postmaster is stopped (SIGSTOP), so the
# TCP connection opens but the server never replies.  The query fails with
# the server's name after connect_timeout (2 s) instead of hanging.
my $frozen_pid = $shards[1]->{_pid};
kill 'STOP', $frozen_pid;
my $started = time;
($ret, $stdout, $stderr) = $coordinator->psql('postgres', sprintf($fanout, random_vector()));
my $elapsed = time - $started;
kill 'CONT', $frozen_pid;
isnt($ret, 0, 'a query over a frozen shard fails');
like($stderr, qr/could not connect to server "shard2".*timeout expired/s,
	'the error names the shard and the timeout');
cmp_ok($elapsed, '<', 15, sprintf('it fails after connect_timeout, not later (%.1f s)', $elapsed));

# A shard that is down: an immediate error, no partial answer; writes routed
# to the other shard go on; after a restart the same session works again (its
# cached connection is replaced).
my $session = $coordinator->background_psql('postgres', on_error_stop => 0);
sub session_query
{
	my ($sql) = @_;
	$session->{stderr} = '';
	my $out = $session->query($sql);
	my $err = $session->{stderr};
	$session->{stderr} = '';
	return ($out, $err);
}
my ($out, $err) = session_query(sprintf($fanout, random_vector()));
is($err, '', 'a session queries both shards');
$shards[1]->stop;
($out, $err) = session_query(sprintf($fanout, random_vector()));
like($err, qr/could not connect to server "shard2".*Connection refused/s,
	'with shard 2 down the fan-out query fails and names the shard');
is($out, '', 'and returns no partial answer');
($out, $err) = session_query(sprintf($plain, random_vector()));
like($err, qr/could not connect to server "shard2"/, 'so does the query on the partitioned table');
my $id_on_shard1 = $coordinator->safe_psql('postgres',
	"SELECT i FROM generate_series(100001, 100100) i WHERE satisfies_hash_partition('items'::regclass, 2, 0, i::bigint) LIMIT 1");
($out, $err) = session_query("INSERT INTO items VALUES ($id_on_shard1, '" . random_vector() . "')");
is($err, '', 'a row for shard 1 is inserted while shard 2 is down');
$shards[1]->start;
($out, $err) = session_query(sprintf($fanout, random_vector()));
is($err, '', 'with shard 2 back the same session queries both shards again');
is((split /,/, $out) + 0, $k, "and gets $k rows");
$session->quit;
$coordinator->safe_psql('postgres', "INSERT INTO items_all SELECT * FROM items WHERE id = $id_on_shard1");
compare_with_one_server('after shard 2 came back');

$coordinator->stop;
$_->stop for @shards;
done_testing();
