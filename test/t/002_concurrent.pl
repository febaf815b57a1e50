# Concurrent writes and searches on an ivfpq index: pgbench clients insert
# clustered vectors while other pgbench clients run k-NN searches through the
# index.  Afterwards no client failed, the index holds every row exactly once,
# each new row is found by its own vector, and recall@10 against exact search
# holds.  Then most rows are deleted, VACUUM runs, new rows arrive (again under
# concurrent searches) and the same checks hold after the churn.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $dim = 32;
my $centres = 20;
my $lists = 20;
my $insert_clients = 4;
my $insert_rate = 1000;   # rows per second over all inserting clients
my $search_clients = 3;
my $seconds = 8;

my $node = PostgreSQL::Test::Cluster->new('concurrent');
$node->init;
# jit = off: with enable_seqscan off the disabled plans' costs cross the JIT
# thresholds, and compiling every search would take longer than running it.
$node->append_conf('postgresql.conf', "max_parallel_maintenance_workers = 0\nautovacuum = off\njit = off\n");
$node->start;

# A point of cluster c: the centre plus uniform noise in [-0.5, 0.5).
my $point = "(SELECT ARRAY(SELECT v[d] + random() - 0.5 FROM generate_series(1, $dim) d)::vector "
  . "FROM centres WHERE c = %s)";

$node->safe_psql('postgres', qq{
	CREATE EXTENSION ivfpq;
	SELECT setseed(0.17);
	CREATE TABLE centres AS
		SELECT c, ARRAY(SELECT random() * 4 FROM generate_series(1, $dim) WHERE c > 0) AS v
		FROM generate_series(1, $centres) c;
	CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, e vector($dim) NOT NULL);
	INSERT INTO items (e) SELECT } . sprintf($point, "1 + i % $centres") . qq{ FROM generate_series(1, 4000) i;
	CREATE INDEX items_idx ON items USING ivfpq (e) WITH (lists = $lists, m = 8);
	CREATE TABLE queries AS SELECT q, } . sprintf($point, "1 + (q * 7) % $centres") . qq{ AS e
		FROM generate_series(1, 40) q;

	-- recall\@k of the index (probes lists, default rerank) against exact
	-- search (sequential scan and sort), over all queries
	CREATE FUNCTION recall_at(k int, probes int) RETURNS float8 LANGUAGE plpgsql AS \$\$
	DECLARE
		hits int := 0;
		qrow record;
		approx bigint[];
		exact bigint[];
	BEGIN
		FOR qrow IN SELECT * FROM queries ORDER BY q LOOP
			PERFORM set_config('enable_seqscan', 'off', true), set_config('enable_indexscan', 'on', true),
					set_config('ivfpq.probes', probes::text, true);
			SELECT array_agg(id) INTO approx FROM (SELECT id FROM items ORDER BY e <-> qrow.e LIMIT k) s;
			PERFORM set_config('enable_seqscan', 'on', true), set_config('enable_indexscan', 'off', true);
			SELECT array_agg(id) INTO exact FROM (SELECT id FROM items ORDER BY e <-> qrow.e LIMIT k) s;
			hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
		END LOOP;
		RETURN hits::float8 / (k * (SELECT count(*) FROM queries));
	END \$\$;
});

# pgbench scripts: insert one clustered point; search the 10 nearest rows of
# a fresh point through the index, failing the client unless 10 rows come back.
my $scripts = $PostgreSQL::Test::Utils::tmp_check;
open(my $fh, '>', "$scripts/insert.sql") or die $!;
print $fh "\\set c random(1, $centres)\n"
  . "INSERT INTO items (e) SELECT " . sprintf($point, ':c') . ";\n";
close $fh;
open($fh, '>', "$scripts/search.sql") or die $!;
print $fh "\\set c random(1, $centres)\n"
  . "SET enable_seqscan = off;\n"
  . "SELECT 1 / (count(*) = 10)::int FROM (SELECT id FROM items ORDER BY e <-> "
  . sprintf($point, ':c') . " LIMIT 10) s;\n";
close $fh;

# Run the inserting and the searching pgbench side by side; check both ended
# cleanly and did real work.
sub run_concurrently
{
	my ($label) = @_;
	my @connection = ('-h', $node->host, '-p', $node->port, '-n', '-T', $seconds);
	my ($insert_out, $insert_err, $search_out, $search_err) = ('', '', '', '');
	my $inserts = IPC::Run::start(
		[ 'pgbench', @connection, '-c', $insert_clients, '-j', $insert_clients, '-R', $insert_rate,
			'-f', "$scripts/insert.sql", 'postgres' ],
		'>', \$insert_out, '2>', \$insert_err);
	my $searches = IPC::Run::start(
		[ 'pgbench', @connection, '-c', $search_clients, '-j', $search_clients,
			'-f', "$scripts/search.sql", 'postgres' ],
		'>', \$search_out, '2>', \$search_err);
	my $inserts_ok = $inserts->finish;
	my $searches_ok = $searches->finish;

	ok($inserts_ok, "$label: inserting pgbench exits cleanly") or diag($insert_err);
	ok($searches_ok, "$label: searching pgbench exits cleanly") or diag($search_err);
	unlike($insert_err . $search_err, qr/ERROR|abort/i, "$label: no client reported an error");
	my ($inserted) = $insert_out =~ /number of transactions actually processed: (\d+)/;
	my ($searched) = $search_out =~ /number of transactions actually processed: (\d+)/;
	cmp_ok($inserted // 0, '>', 100, "$label: clients inserted rows");
	cmp_ok($searched // 0, '>', 100, "$label: clients searched while they did");
	note("$label: $inserted inserts and $searched searches in $seconds s");
}

# Index-wide checks after a round of writes: the index row count, a full
# index scan returning each live row once, the rows added since first_new_id
# each found by its own vector, and recall@10.
sub check_index
{
	my ($label, $first_new_id) = @_;

	is($node->safe_psql('postgres', "SELECT rows FROM ivfpq_index_stats('items_idx')"),
		$node->safe_psql('postgres', 'SELECT count(*) FROM items'),
		"$label: index row count equals table row count");
	is($node->safe_psql('postgres', qq{
			SET enable_seqscan = off; SET ivfpq.probes = $lists;
			SELECT count(*) = count(DISTINCT id) AND count(*) = (SELECT count(*) FROM items)
			FROM (SELECT id FROM items ORDER BY e <-> (SELECT e FROM queries WHERE q = 1)) s}),
		't', "$label: a full index scan returns every live row exactly once");
	# probing only the new row's own list, its vector finds it first
	my $sample = $node->safe_psql('postgres', qq{
			SET enable_seqscan = off; SET ivfpq.probes = 1;
			SELECT count(*), count(*) FILTER (WHERE (SELECT id FROM items i ORDER BY i.e <-> n.e LIMIT 1) = n.id)
			FROM (SELECT id, e FROM items WHERE id >= $first_new_id ORDER BY random() LIMIT 300) n});
	my ($sampled, $found) = split /\|/, $sample;
	cmp_ok($sampled, '>=', 100, "$label: enough new rows to sample");
	is($found, $sampled, "$label: every sampled new row is the nearest neighbour of its own vector");
	my $recall = $node->safe_psql('postgres', 'SELECT recall_at(10, 4)');
	cmp_ok($recall, '>=', 0.9, "$label: recall\@10 with 4 of $lists lists against exact search ($recall)");
}

my $first_new_id = $node->safe_psql('postgres', 'SELECT max(id) + 1 FROM items');
run_concurrently('inserts');
check_index('after concurrent inserts', $first_new_id);

# Churn: delete 80% of the rows, VACUUM, then new rows under concurrent searches.
my $pages_before = $node->safe_psql('postgres', "SELECT pages FROM ivfpq_index_stats('items_idx')");
my $rows_before = $node->safe_psql('postgres', 'SELECT count(*) FROM items');
$node->safe_psql('postgres', 'DELETE FROM items WHERE id % 5 <> 0');
$node->safe_psql('postgres', 'VACUUM items');
is($node->safe_psql('postgres', "SELECT rows FROM ivfpq_index_stats('items_idx')"),
	$node->safe_psql('postgres', 'SELECT count(*) FROM items'),
	'after DELETE + VACUUM: index row count equals table row count');
cmp_ok($node->safe_psql('postgres', "SELECT free_pages FROM ivfpq_index_stats('items_idx')"), '>', 0,
	'VACUUM unlinked emptied list pages');
# The unlinked pages are reusable once no transaction that might have seen
# them runs: the next VACUUM hands them to the free space map.
$node->safe_psql('postgres', 'SELECT txid_current()');
$node->safe_psql('postgres', 'VACUUM items');
$first_new_id = $node->safe_psql('postgres', 'SELECT max(id) + 1 FROM items');
run_concurrently('reinserts');
check_index('after delete, VACUUM and reinsert', $first_new_id);
my $rows_after = $node->safe_psql('postgres', 'SELECT count(*) FROM items');
my $pages_after = $node->safe_psql('postgres', "SELECT pages FROM ivfpq_index_stats('items_idx')");
note("index pages $pages_before for $rows_before rows before the churn, $pages_after for $rows_after after");
cmp_ok($rows_after, '<=', $rows_before, 'the churn ends with no more rows than it began with');
cmp_ok($pages_after, '<=', $pages_before, 'after the churn the index is no larger than before it (freed pages reused)');
is($node->safe_psql('postgres', "SELECT count(*) FROM ivfpq_verify('items_idx', true)"), '0',
	'ivfpq_verify is clean after the churn');

unlike(slurp_file($node->logfile), qr/ERROR|FATAL|PANIC|TRAP|terminated by signal/,
	'the server log has no errors or crashes');
$node->stop;
done_testing();
