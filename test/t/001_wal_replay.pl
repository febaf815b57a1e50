# WAL replay of ivfpq indexes: a streaming replica sees the built index and
# every insert/vacuum after it, and crash recovery (immediate stop) loses
# nothing that was committed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $dim = 16;

sub random_vector
{
	return '[' . join(',', map { sprintf('%.4f', rand()) } 1 .. $dim) . ']';
}

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "max_parallel_maintenance_workers = 0\n");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION ivfpq');
$primary->safe_psql('postgres', "CREATE TABLE items (id int, e vector($dim))");
$primary->safe_psql('postgres',
	"INSERT INTO items SELECT i, ARRAY(SELECT random() FROM generate_series(1, $dim) WHERE i > 0)::vector "
	  . "FROM generate_series(1, 3000) i");
$primary->safe_psql('postgres',
	'CREATE INDEX items_idx ON items USING ivfpq (e) WITH (lists = 20, m = 8)');

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;

# writes after the backup reach the replica through WAL only
$primary->safe_psql('postgres',
	"INSERT INTO items SELECT 10000 + i, ARRAY(SELECT random() FROM generate_series(1, $dim) WHERE i > 0)::vector "
	  . "FROM generate_series(1, 2000) i");
$primary->safe_psql('postgres', 'DELETE FROM items WHERE id % 3 = 0');
$primary->safe_psql('postgres', 'VACUUM items');
$primary->wait_for_catchup($standby);

my $stats = 'SELECT lists, rows, pages FROM ivfpq_index_stats(\'items_idx\')';
is($standby->safe_psql('postgres', $stats), $primary->safe_psql('postgres', $stats),
	'replica index has the same lists, rows and pages');

my $knn = "SET enable_seqscan = off; SET ivfpq.probes = 20; "
  . "SELECT string_agg(id::text, ',') FROM (SELECT id FROM items ORDER BY e <-> '"
  . random_vector() . "' LIMIT 10) s";
my $on_primary = $primary->safe_psql('postgres', $knn);
is($standby->safe_psql('postgres', $knn), $on_primary, 'replica returns the same neighbours');
my $exact = $primary->safe_psql('postgres', $knn =~ s/enable_seqscan = off/enable_indexscan = off/r);
is($on_primary, $exact, 'with all lists probed the index result equals exact search');

my $count_via_index = "SET enable_seqscan = off; SET ivfpq.rerank = 0; SET ivfpq.probes = 20; "
  . "SELECT count(*) FROM (SELECT id FROM items ORDER BY e <-> '" . random_vector() . "') s";
is($standby->safe_psql('postgres', $count_via_index),
	$primary->safe_psql('postgres', 'SELECT count(*) FROM items'),
	'every live row is reachable through the index on the replica');

# VACUUM's page freeing and reuse replay on the standby: half the rows go,
# VACUUM moves entries and unlinks pages, the next VACUUM hands them to the
# free space map, and new rows take them.
my $space = 'SELECT rows, pages, free_pages, list_pages_max FROM ivfpq_index_stats(\'items_idx\')';
$primary->safe_psql('postgres',
	"INSERT INTO items SELECT 100000 + i, ARRAY(SELECT random() FROM generate_series(1, $dim) WHERE i > 0)::vector "
	  . "FROM generate_series(1, 30000) i");
$primary->safe_psql('postgres', 'DELETE FROM items WHERE id % 2 = 0');
$primary->safe_psql('postgres', 'VACUUM items');
$primary->wait_for_catchup($standby);
cmp_ok($primary->safe_psql('postgres', "SELECT free_pages FROM ivfpq_index_stats('items_idx')"), '>', 0,
	'VACUUM unlinked list pages');
is($standby->safe_psql('postgres', $space), $primary->safe_psql('postgres', $space),
	'after VACUUM unlinked pages the replica has the same rows, pages and free pages');
is($standby->safe_psql('postgres', $knn), $primary->safe_psql('postgres', $knn),
	'after VACUUM unlinked pages the replica returns the same neighbours');
is($standby->safe_psql('postgres', $count_via_index), $primary->safe_psql('postgres', 'SELECT count(*) FROM items'),
	'after VACUUM unlinked pages every live row is reachable through the index on the replica');
$primary->safe_psql('postgres', 'SELECT txid_current()');
$primary->safe_psql('postgres', 'VACUUM items');
my $pages_before_reuse = $primary->safe_psql('postgres', "SELECT pages FROM ivfpq_index_stats('items_idx')");
$primary->safe_psql('postgres',
	"INSERT INTO items SELECT 200000 + i, ARRAY(SELECT random() FROM generate_series(1, $dim) WHERE i > 0)::vector "
	  . "FROM generate_series(1, 5000) i");
$primary->wait_for_catchup($standby);
is($primary->safe_psql('postgres', "SELECT pages FROM ivfpq_index_stats('items_idx')"), $pages_before_reuse,
	'new rows went into freed pages: the index did not grow');
is($standby->safe_psql('postgres', $space), $primary->safe_psql('postgres', $space),
	'after reuse of freed pages the replica has the same rows, pages and free pages');
my $knn2 = $knn =~ s/LIMIT 10/LIMIT 30/r;
is($standby->safe_psql('postgres', $knn2), $primary->safe_psql('postgres', $knn2),
	'after reuse of freed pages the replica returns the same neighbours');
is($standby->safe_psql('postgres', $count_via_index), $primary->safe_psql('postgres', 'SELECT count(*) FROM items'),
	'after reuse of freed pages every live row is reachable through the index on the replica');
is($primary->safe_psql('postgres', "SELECT count(*) FROM ivfpq_verify('items_idx', true)"), '0',
	'ivfpq_verify is clean on the primary');

# crash recovery: committed inserts survive an immediate stop
$primary->safe_psql('postgres',
	"INSERT INTO items SELECT 50000 + i, ARRAY(SELECT random() FROM generate_series(1, $dim) WHERE i > 0)::vector "
	  . "FROM generate_series(1, 1500) i");
$primary->safe_psql('postgres', "INSERT INTO items VALUES (99999, '[" . join(',', (7) x $dim) . "]')");
$primary->stop('immediate');
$primary->start;
is($primary->safe_psql('postgres', $count_via_index),
	$primary->safe_psql('postgres', 'SELECT count(*) FROM items'),
	'after crash recovery every row is in the index');
is($primary->safe_psql('postgres',
		"SET enable_seqscan = off; SELECT id FROM items ORDER BY e <-> '[" . join(',', (7) x $dim) . "]' LIMIT 1"),
	'99999', 'a row committed just before the crash is found');

# an index built right before a crash is complete after recovery
$primary->safe_psql('postgres', 'CREATE INDEX items_idx2 ON items USING ivfpq (e vector_cosine_ops) WITH (lists = 10, m = 4)');
$primary->stop('immediate');
$primary->start;
is($primary->safe_psql('postgres', "SELECT rows FROM ivfpq_index_stats('items_idx2')"),
	$primary->safe_psql('postgres', 'SELECT count(*) FROM items'),
	'index built before a crash is intact');

# filter columns replay too: the values move with their entries through
# inserts and VACUUM, and the replica's filtered scans see the same rows
$primary->safe_psql('postgres', "CREATE TABLE tagged (id int, cat int, e vector($dim))");
$primary->safe_psql('postgres',
	"INSERT INTO tagged SELECT i, i % 10, ARRAY(SELECT random() FROM generate_series(1, $dim) WHERE i > 0)::vector "
	  . "FROM generate_series(1, 3000) i");
$primary->safe_psql('postgres', 'CREATE INDEX tagged_idx ON tagged USING ivfpq (e, cat) WITH (lists = 10, m = 8)');
$primary->safe_psql('postgres',
	"INSERT INTO tagged SELECT i, i % 10, ARRAY(SELECT random() FROM generate_series(1, $dim) WHERE i > 0)::vector "
	  . "FROM generate_series(3001, 6000) i");
$primary->safe_psql('postgres', 'DELETE FROM tagged WHERE id % 4 = 0');
$primary->safe_psql('postgres', 'VACUUM tagged');
$primary->wait_for_catchup($standby);
my $tagged_via_index = "SET enable_seqscan = off; SET ivfpq.rerank = 0; "
  . "SELECT count(*), count(*) FILTER (WHERE cat = 3) FROM (SELECT id, cat FROM tagged WHERE cat = 3 ORDER BY e <-> '"
  . random_vector() . "') s";
is($standby->safe_psql('postgres', $tagged_via_index),
	$primary->safe_psql('postgres', 'SELECT count(*), count(*) FROM tagged WHERE cat = 3'),
	'on the replica a filtered scan of a multicolumn index returns exactly the rows passing the filter');
is($primary->safe_psql('postgres', "SELECT count(*) FROM ivfpq_verify('tagged_idx', true)"), '0',
	'ivfpq_verify is clean on the multicolumn index');

$standby->stop;
$primary->stop;
done_testing();
