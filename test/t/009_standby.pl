# Two streaming hot standbys serving k-NN queries while their primary takes
# writes: pgbench clients query both standbys through the ivfpq index while
# the primary inserts, deletes, VACUUMs and rebuilds the index (REINDEX);
# no query fails, and once each standby has caught up its
# answers (at the default settings and with every list probed) equal the
# primary's.  Both servers preload ivfpq (the README's set-up): the background
# worker runs on the primary only, starts on the standby when it is promoted,
# and the shared quantizer cache serves the standby's backends.  What a
# standby cannot do (build, VACUUM, rotate) fails with Postgres's read-only
# error.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $dim = 16;
my $lists = 10;
my $k = 10;
my $seconds = 8;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'ivfpq'
ivfpq.shared_cache_mb = 16
ivfpq.worker_databases = 'postgres'
ivfpq.worker_naptime = 1
max_parallel_maintenance_workers = 0
autovacuum = off
jit = off
});
$primary->start;

sub random_vector
{
	return '[' . join(',', map { sprintf('%.4f', rand()) } 1 .. $dim) . ']';
}
my $new_rows = "INSERT INTO items SELECT i, ARRAY(SELECT random() FROM generate_series(1, $dim) WHERE i > 0)::vector "
  . "FROM generate_series(%d, %d) i";

$primary->safe_psql('postgres', "CREATE EXTENSION ivfpq; CREATE TABLE items (id bigint PRIMARY KEY, embedding vector($dim))");
$primary->safe_psql('postgres', sprintf($new_rows, 1, 4000));
$primary->safe_psql('postgres',
	"CREATE INDEX items_embedding_idx ON items USING ivfpq (embedding) WITH (lists = $lists, m = 8); ANALYZE items");
$primary->safe_psql('postgres', qq{
	CREATE TABLE events (id bigint, at timestamptz NOT NULL, embedding vector($dim)) PARTITION BY RANGE (at);
	SELECT count(*) FROM ivfpq_manage('events', 'at', premake => 1, index_options => 'lists = 4, m = 8');
});

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
# A second standby of the same primary, for read scaling (bench/replicas.sh).
my $standby2 = PostgreSQL::Test::Cluster->new('standby2');
$standby2->init_from_backup($primary, 'backup', has_streaming => 1);
$standby2->start;
my @standbys = ($standby, $standby2);
for my $node (@standbys)
{
	$primary->wait_for_catchup($node);
	is($node->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', $node->name . ' is in recovery');
}
is($primary->safe_psql('postgres', "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"), '2',
	'the primary streams to both standbys');

# The worker: registered to start once recovery has finished, so the
# standby, which preloads ivfpq with the same settings, has none.
# The worker shows in pg_stat_activity; the launcher, which connects to no
# database, only as a process titled "<cluster_name>: ivfpq launcher".
my $workers = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'ivfpq worker'";
sub launchers
{
	my ($node) = @_;
	my $name = $node->name;
	return scalar(grep { /^postgres: \Q$name\E: ivfpq launcher/ } split /\n/, `ps -e -o args=`);
}
ok($primary->poll_query_until('postgres', "SELECT ($workers) = 1"), 'the primary runs an ivfpq worker');
is(launchers($primary), 1, 'and the ivfpq launcher');
sleep 3;    # three worker naptimes
for my $node (@standbys)
{
	is($node->safe_psql('postgres', $workers), '0', $node->name . ' runs no ivfpq worker');
	is(launchers($node), 0, 'and no launcher');
}
is($standby->safe_psql('postgres', "SHOW shared_preload_libraries"), 'ivfpq', 'though it preloads ivfpq');

# The shared quantizer cache on the standby: the first query publishes the
# index's quantizer, a second session finds it.
my $knn = "SET enable_seqscan = off; SELECT string_agg(id::text, ',') FROM "
  . "(SELECT id FROM items ORDER BY embedding <-> '%s' LIMIT $k) s";
$standby->safe_psql('postgres', sprintf($knn, random_vector()));
$standby->safe_psql('postgres', sprintf($knn, random_vector()));
my $cache = "SELECT count(*), sum(hits) FROM ivfpq_shared_cache() "
  . "WHERE index = 'items_embedding_idx'::regclass AND NOT retired";
my ($entries, $hits) = split /\|/, $standby->safe_psql('postgres', $cache);
is($entries, 1, 'the standby has the index quantizer in its shared cache');
cmp_ok($hits, '>=', 1, 'a second session on the standby found it there');

# What the standby cannot do: clear read-only errors.
for my $sql ('VACUUM items', 'REINDEX INDEX items_embedding_idx',
	"CREATE INDEX ON items USING ivfpq (embedding) WITH (lists = $lists)", "SELECT * FROM ivfpq_rotate('events', now() + interval '7 days')")
{
	my ($ret, $stdout, $stderr) = $standby->psql('postgres', $sql);
	like($stderr, qr/ERROR:  cannot (execute .* (during recovery|in a read-only transaction)|run .* during recovery)/,
		"on the standby \"$sql\" fails with a read-only error");
}

# Load: pgbench clients run k-NN queries on both standbys (a new random
# vector each time) while the primary takes writes.
my $scripts = PostgreSQL::Test::Utils::tempdir;
open(my $fh, '>', "$scripts/search.sql") or die;
print $fh "SET enable_seqscan = off;\n"
  . "SELECT id FROM items ORDER BY embedding <-> "
  . "(SELECT ARRAY(SELECT random() FROM generate_series(1, $dim))::vector) LIMIT $k;\n";
close $fh;
my (@searches, @search_out, @search_err);
for my $i (0, 1)
{
	($search_out[$i], $search_err[$i]) = ('', '');
	push @searches, IPC::Run::start(
		[ 'pgbench', '-h', $standbys[$i]->host, '-p', $standbys[$i]->port, '-n', '-T', $seconds, '-c', 2, '-j', 2,
			'-f', "$scripts/search.sql", 'postgres' ],
		'>', \$search_out[$i], '2>', \$search_err[$i]);
}

my $next_id = 4001;
my $writes = 0;
my $started = time;
while (time - $started < $seconds - 1)
{
	$primary->safe_psql('postgres', sprintf($new_rows, $next_id, $next_id + 299));
	$next_id += 300;
	$primary->safe_psql('postgres', 'DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY random() LIMIT 150)');
	$primary->safe_psql('postgres', 'VACUUM items');
	$writes++;
	# A plain REINDEX: the index keeps its OID and the standby's queries wait
	# for its replay.  REINDEX CONCURRENTLY drops the old index's OID, and a
	# standby query being planned at that moment fails with "could not open
	# relation with OID" (Postgres's behaviour with any index type: the
	# primary does not wait for standby queries; README, Read replicas).
	$primary->safe_psql('postgres', 'REINDEX INDEX items_embedding_idx') if $writes == 2;
}
for my $i (0, 1)
{
	my $name = $standbys[$i]->name;
	my $searches_ok = $searches[$i]->finish;
	ok($searches_ok, "the searching pgbench on $name exits cleanly") or diag($search_err[$i]);
	unlike($search_err[$i], qr/ERROR|abort/i, "no query on $name failed");
	my ($transactions) = $search_out[$i] =~ /number of transactions actually processed: (\d+)/;
	cmp_ok($transactions // 0, '>', 10, "$name answered queries under load (" . ($transactions // 0) . ")");
}
cmp_ok($writes, '>=', 3, "the primary took $writes rounds of inserts, deletes and VACUUM and one REINDEX");

# Caught up, each standby holds the same index and gives the same answers.
my $stats = "SELECT lists, rows, pages FROM ivfpq_index_stats('items_embedding_idx')";
for my $node (@standbys)
{
	my $name = $node->name;
	$primary->wait_for_catchup($node);
	is($node->safe_psql('postgres', $stats), $primary->safe_psql('postgres', $stats),
		"after catch-up the $name index has the same lists, rows and pages");
	for my $i (1 .. 5)
	{
		my $query = random_vector();
		is($node->safe_psql('postgres', sprintf($knn, $query)), $primary->safe_psql('postgres', sprintf($knn, $query)),
			"query $i: $name returns the primary's ids at the default settings");
		my $all_lists = "SET ivfpq.probes = $lists; SET ivfpq.rerank = 1000; " . sprintf($knn, $query);
		is($node->safe_psql('postgres', $all_lists), $primary->safe_psql('postgres', $all_lists),
			"query $i: and with every list probed");
	}
}
($entries, $hits) = split /\|/, $standby->safe_psql('postgres', $cache);
is($entries, 1, 'the standby serves the rebuilt index from one shared cache entry');
cmp_ok($hits, '>=', 10, "found there by its backends ($hits times)");

# Promoted, the former standby starts its worker.
$standby->promote;
ok($standby->poll_query_until('postgres', "SELECT ($workers) = 1"), 'once promoted the former standby runs an ivfpq worker');
is(launchers($standby), 1, 'and the launcher');

# The second standby still follows the primary.
$primary->safe_psql('postgres', sprintf($new_rows, $next_id, $next_id + 9));
$primary->wait_for_catchup($standby2);
is($standby2->safe_psql('postgres', 'SELECT count(*) FROM items'), $primary->safe_psql('postgres', 'SELECT count(*) FROM items'),
	'the other standby goes on replaying the primary');

$standby->stop;
$standby2->stop;
$primary->stop;
done_testing();
