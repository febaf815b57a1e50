# Crash recovery of ivfpq indexes: kill -9 of the postmaster, repeated, in
# three situations, each followed by a restart (crash recovery) and checks.
#
#  (a) during concurrent inserts and deletes (pgbench: two inserting clients,
#      one deleting client);
#  (b) during a VACUUM after a large DELETE (VACUUM slowed down by its cost
#      delay, killed in a chosen phase: scanning heap, vacuuming indexes,
#      vacuuming heap);
#  (c) during CREATE INDEX [CONCURRENTLY] (killed in a chosen build phase):
#      afterwards the index does not exist, or is invalid (CONCURRENTLY), or
#      is valid and complete; REINDEX or DROP of it works, and a new CREATE
#      INDEX succeeds.
#
# A ledger says what committed: every write to `items` also writes, in the
# same transaction, the plain tables `ledger` (ids of live rows) and `gone`
# (ids of deleted rows).  After every restart:
#  - the table holds exactly the ledger's rows and none of `gone`;
#  - for each valid ivfpq index, an index scan over all lists (probes =
#    lists, rerank at its maximum, enable_seqscan off, EXPLAIN showing the
#    index) returns every ledger row exactly once and no row of `gone`;
#  - recently committed rows and a random sample are each the nearest
#    neighbour of their own vector through the index;
#  - ivfpq_verify(index, true) reports no problem;
#  - VACUUM then leaves as many index entries as live rows, and after new
#    rows (which may take the freed heap slots) the checks above hold again.
#
# Kill modes alternate between trials: "all" kills the postmaster and then at
# once every other process of the node (nothing runs on after the kill, as
# after a power cut), "postmaster" kills only the postmaster (its orphaned
# backends run on until they notice, as after kill -9 of the postmaster in
# production; the restart waits for them, and a busy one may even finish its
# statement: a CREATE INDEX then commits, which the checks accept).
#
# IVFPQ_CRASH_TRIALS=N sets the trials per situation (default 3).
use strict;
use warnings;
use Cwd qw(abs_path);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $trials = $ENV{IVFPQ_CRASH_TRIALS} || 3;
my $dim = 32;
my $centres = 50;
my $start_rows = 10000;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
# autovacuum off: the VACUUM of situation (b) is ours, and nothing else
# touches the table between a crash and its checks.
$node->append_conf('postgresql.conf', qq{
max_parallel_maintenance_workers = 0
autovacuum = off
jit = off
restart_after_crash = off
});
$node->start;
my $datadir = abs_path($node->data_dir);

# SQL runs through one background psql session between crashes (starting
# psql for every query costs more than the queries), else through safe_psql.
my $session;
sub sql { return $session ? $session->query_safe($_[0]) : $node->safe_psql('postgres', $_[0]); }

sub open_session
{
	$session = $node->background_psql('postgres');
	$session->set_query_timer_restart;
	$session->query_safe('SET client_min_messages = warning');
	return;
}

sub close_session
{
	$session->quit if $session;
	undef $session;
	return;
}

# a point of cluster $c (an SQL expression): the centre plus uniform noise
# in [-0.5, 0.5), drawn afresh for each value of $c's row
sub point
{
	my ($c) = @_;
	return "(SELECT ARRAY(SELECT v[d] + random() - 0.5 FROM generate_series(1, $dim) d "
	  . "WHERE $c > 0)::vector FROM centres WHERE c = $c)";
}

sql(qq{
CREATE EXTENSION ivfpq;
SELECT setseed(0.5);
CREATE TABLE centres AS
	SELECT c, ARRAY(SELECT random() * 4 FROM generate_series(1, $dim) WHERE c > 0) AS v
	FROM generate_series(1, $centres) c;
CREATE SEQUENCE item_ids;
CREATE TABLE items (id bigint PRIMARY KEY, e vector($dim) NOT NULL);
CREATE TABLE ledger (id bigint PRIMARY KEY);
CREATE TABLE gone (id bigint PRIMARY KEY);

-- insert n rows and record them in the ledger, in the caller's transaction
CREATE FUNCTION add_rows(n int) RETURNS SETOF bigint LANGUAGE sql AS \$\$
	WITH ins AS (
		INSERT INTO items
		SELECT nextval('item_ids'), } . point('k.c') . qq{
		FROM (SELECT 1 + floor(random() * $centres)::int AS c FROM generate_series(1, n) g) k
		RETURNING id)
	INSERT INTO ledger SELECT id FROM ins RETURNING id
\$\$;
-- delete the rows chosen by a query of ids, moving them to gone
CREATE FUNCTION delete_rows(ids bigint[]) RETURNS void LANGUAGE sql AS \$\$
	WITH d AS (DELETE FROM items WHERE id IN (SELECT unnest(ids)) RETURNING id),
		 l AS (DELETE FROM ledger WHERE id IN (SELECT id FROM d) RETURNING id)
	INSERT INTO gone SELECT id FROM l
\$\$;

-- poll cond (a query returning one text, NULL for "not yet") every 2 ms
-- with a fresh view of the statistics, until it returns a value (returned)
-- or timeout_s passed ('timeout')
CREATE FUNCTION wait_until(cond text, timeout_s float8) RETURNS text LANGUAGE plpgsql AS \$\$
DECLARE
	t0 timestamptz := clock_timestamp();
	result text;
BEGIN
	LOOP
		PERFORM pg_stat_clear_snapshot();
		EXECUTE cond INTO result;
		IF result IS NOT NULL THEN RETURN result; END IF;
		IF clock_timestamp() - t0 > make_interval(secs => timeout_s) THEN RETURN 'timeout'; END IF;
		PERFORM pg_sleep(0.002);
	END LOOP;
END \$\$;
});
sql("SELECT count(*) FROM add_rows($start_rows)");
sql('CREATE INDEX items_idx ON items USING ivfpq (e) WITH (lists = 32, m = 8)');
sql('CREATE INDEX items_cos ON items USING ivfpq (e vector_cosine_ops) WITH (lists = 16, m = 16)');
sql('VACUUM ANALYZE items');
open_session();


# ---------------------------------------------------------------- crash

# pids of the processes of this node: their working directory is the data
# directory (the postmaster chdirs there; its children inherit it).
sub node_pids
{
	my @pids;
	opendir(my $dh, '/proc') or die "no /proc: $!";
	for my $pid (grep { /^\d+$/ } readdir($dh))
	{
		my $cwd = readlink("/proc/$pid/cwd");
		push @pids, $pid if defined $cwd && $cwd eq $datadir;
	}
	closedir($dh);
	return @pids;
}

# kill -9 the postmaster (mode "all": together with the node's processes
# listed in @known, found beforehand so that no time is lost, then the rest
# of them), wait until no process of the node is left, start again.
sub crash_and_restart
{
	my ($label, $mode, @known) = @_;
	my $postmaster = $node->{_pid};
	$node->kill9;
	if ($mode eq 'all')
	{
		kill('KILL', grep { $_ != $postmaster } @known);
		kill('KILL', grep { $_ != $postmaster } node_pids());
	}
	close_session();
	my $gone = 0;
	for (my $try = 0; $try < 1200 && !$gone; $try++)
	{
		$gone = !node_pids();
		select(undef, undef, undef, 0.05) unless $gone;
	}
	ok($gone, "$label: every process of the node has exited after kill -9 ($mode)");
	my $log_offset = -s $node->logfile;
	my $started = 0;
	for (my $try = 0; $try < 60 && !$started; $try++)
	{
		$node->{_pid} = undef;
		$started = $node->start(fail_ok => 1);
		sleep 1 unless $started;
	}
	ok($started, "$label: the server restarts after the crash") or BAIL_OUT('no restart');
	my $log = slurp_file($node->logfile, $log_offset);
	like($log, qr/database system was interrupted|was not properly shut down/,
		"$label: the restart ran crash recovery");
	unlike($log, qr/PANIC|TRAP:|terminated by signal|invalid page|ERROR/,
		"$label: crash recovery logged no error");
	open_session();
	return;
}

# Wait in the server until $cond (a query of one text, NULL or no row for
# "not yet") returns a value, and return it ('timeout' after 60 s).  $waiter
# is a background psql session opened beforehand, so the answer arrives as
# soon as it exists.
sub wait_in_server
{
	my ($waiter, $cond) = @_;
	return $waiter->query_safe("SELECT wait_until(\$\$$cond\$\$, 60)");
}

sub open_waiter
{
	my $waiter = $node->background_psql('postgres');
	$waiter->set_query_timer_restart;
	return $waiter;
}

# Run psql commands (each its own -c) in the background.
sub start_psql
{
	my (@commands) = @_;
	my %h = (out => '', err => '');
	$h{run} = IPC::Run::start(
		[ 'psql', '-X', '-h', $node->host, '-p', $node->port, '-d', 'postgres', '-v', 'ON_ERROR_STOP=1',
			map { ('-c', $_) } @commands ],
		'>', \$h{out}, '2>', \$h{err}, IPC::Run::timeout(300));
	return \%h;
}

# Wait for a background psql (or pgbench) started above; true if it succeeded.
sub finish_psql
{
	my ($h) = @_;
	my $ok = eval { $h->{run}->finish };
	if ($@)
	{
		$h->{run}->kill_kill;
		$h->{err} .= "\n(timed out: $@)";
		$ok = 0;
	}
	return $ok ? 1 : 0;
}

# ---------------------------------------------------------------- checks

sub ivfpq_indexes
{
	my @rows = split /\n/, sql(q{
		SELECT c.relname, o.opcname, i.indisvalid
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
			JOIN pg_opclass o ON o.oid = i.indclass[0]
		WHERE i.indrelid = 'items'::regclass AND a.amname = 'ivfpq' ORDER BY 1});
	return map { [ split /\|/ ] } @rows;
}

my %operator = (vector_l2_ops => '<->', vector_ip_ops => '<#>', vector_cosine_ops => '<=>');

# The checks listed at the top, after a restart.
sub check_state
{
	my ($label, $only) = @_;
	my ($missing, $extra, $deleted, $live) = split /\|/, sql(q{
		BEGIN; SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off;
		SELECT (SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.id = l.id)) || '|'
			|| (SELECT count(*) FROM items i WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE i.id = l.id)) || '|'
			|| (SELECT count(*) FROM items JOIN gone USING (id)) || '|'
			|| (SELECT count(*) FROM ledger);
		COMMIT});
	is("$missing|$extra", '0|0', "$label: the table holds exactly the committed rows of the ledger (missing|extra)");
	is($deleted, '0', "$label: no deleted row is in the table");

	for my $index (ivfpq_indexes())
	{
		my ($name, $opclass, $valid) = @$index;
		next unless $valid eq 't';
		next if defined $only && $name ne $only;
		my $op = $operator{$opclass};
		my $c = 1 + int(rand($centres));
		my $lists = sql("SELECT lists FROM ivfpq_index_stats('$name')");
		my $set = "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; "
		  . "SET LOCAL ivfpq.probes = $lists; SET LOCAL ivfpq.rerank = 100000; ";
		my $scan = "SELECT id FROM items ORDER BY e $op (SELECT v::vector FROM centres WHERE c = $c) LIMIT 1000000";
		my @out = split /\n/, sql($set . "EXPLAIN (COSTS OFF) $scan; " . qq{
			WITH s AS MATERIALIZED ($scan)
			SELECT (SELECT count(*) FROM s) || '|' || (SELECT count(DISTINCT id) FROM s) || '|'
				|| (SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.id = l.id)) || '|'
				|| (SELECT count(*) FROM s WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.id = s.id)) || '|'
				|| (SELECT count(*) FROM s JOIN gone USING (id));
			COMMIT});
		my $result = pop @out;
		like(join("\n", @out), qr/Index Scan using $name on items/, "$label: $name: the search uses the index");
		is($result, "$live|$live|0|0|0",
			"$label: $name: an all-lists index scan returns every committed row once, nothing else "
			  . "(returned|distinct|missing|extra|deleted)");
		# rerank 1000 of 10000-15000 rows: the row itself is always among them
		my $own = sql($set =~ s/rerank = 100000/rerank = 1000/r . qq{
			SELECT count(*) || '|' || count(*) FILTER (WHERE (SELECT i.id FROM items i ORDER BY i.e $op n.e LIMIT 1) = n.id)
			FROM (SELECT id, e FROM items WHERE id IN (
				(SELECT id FROM ledger ORDER BY id DESC LIMIT 50)
				UNION (SELECT id FROM ledger ORDER BY random() LIMIT 100))) n;
			COMMIT});
		my ($sampled, $found) = split /\|/, $own;
		cmp_ok($sampled, '>=', 100, "$label: $name: enough rows sampled");
		is($found, $sampled, "$label: $name: each of the $sampled sampled committed rows (the newest, "
			  . "random ones) is the nearest neighbour of its own vector");
		my $problems = sql("SELECT count(*) FROM ivfpq_verify('$name', true)");
		is($problems, '0', "$label: $name: ivfpq_verify reports no problem")
		  or diag(sql("SELECT * FROM ivfpq_verify('$name', true) LIMIT 20"));
	}
	return;
}

# After the checks: VACUUM removes the crash's leftovers, and new rows, which
# may take freed heap slots, are found (the checks run again).
sub vacuum_and_write
{
	my ($label) = @_;
	sql('VACUUM items');
	my $live = sql('SELECT count(*) FROM ledger');
	for my $index (ivfpq_indexes())
	{
		my ($name, $opclass, $valid) = @$index;
		next unless $valid eq 't';
		is(sql("SELECT rows FROM ivfpq_index_stats('$name')"), $live,
			"$label: after VACUUM $name holds one entry per live row");
	}
	sql('SELECT count(*) FROM add_rows(300)');
	check_state("$label, VACUUM and new rows");
	return;
}

# ---------------------------------------------------------------- (a) writes

my $scripts = $PostgreSQL::Test::Utils::tmp_check;
open(my $fh, '>', "$scripts/insert.sql") or die $!;
print $fh "SELECT count(*) FROM add_rows(5);\n";
close $fh;
open($fh, '>', "$scripts/delete.sql") or die $!;
print $fh "SELECT delete_rows(ARRAY(SELECT id FROM ledger WHERE id >= "
  . "(SELECT (random() * max(id))::bigint FROM ledger) ORDER BY id LIMIT 4));\n";
close $fh;

for my $trial (1 .. $trials)
{
	my $label = "writes, trial $trial";
	my $mode = $trial % 2 ? 'all' : 'postmaster';
	my ($rows0, $gone0) = split /\|/, sql('SELECT (SELECT count(*) FROM ledger) || \'|\' || (SELECT count(*) FROM gone)');
	my @connection = ('-h', $node->host, '-p', $node->port, '-n', '-T', 120);
	my %ins = (out => '', err => '');
	my %del = (out => '', err => '');
	$ins{run} = IPC::Run::start(
		[ 'pgbench', @connection, '-c', 2, '-j', 2, '-R', 200, '-f', "$scripts/insert.sql", 'postgres' ],
		'>', \$ins{out}, '2>', \$ins{err}, IPC::Run::timeout(300));
	$del{run} = IPC::Run::start(
		[ 'pgbench', @connection, '-c', 1, '-j', 1, '-R', 100, '-f', "$scripts/delete.sql", 'postgres' ],
		'>', \$del{out}, '2>', \$del{err}, IPC::Run::timeout(300));
	# committed work on both sides, then a random moment later
	ok( $node->poll_query_until('postgres',
			"SELECT (SELECT count(*) FROM ledger) - $rows0 >= 500 AND (SELECT count(*) FROM gone) - $gone0 >= 100"),
		"$label: clients insert and delete")
	  or diag($ins{err} . $del{err});
	close_session();
	my @pids = node_pids();
	select(undef, undef, undef, rand(1.5));
	crash_and_restart($label, $mode, @pids);
	finish_psql(\%ins);
	finish_psql(\%del);
	unlike($ins{err} . $del{err}, qr/ERROR:/,
		"$label: no client failed before the crash") or diag($ins{err} . $del{err});
	note("$label: ledger "
		  . sql("SELECT (SELECT count(*) FROM ledger) || ' live, ' || (SELECT count(*) FROM gone) || ' deleted'"));
	check_state($label);
	vacuum_and_write($label);
}

# ---------------------------------------------------------------- (b) VACUUM

my @vacuum_phases = ('vacuuming indexes', 'scanning heap', 'vacuuming heap');
for my $trial (1 .. $trials)
{
	my $label = "VACUUM, trial $trial";
	my $mode = $trial % 2 ? 'all' : 'postmaster';
	my $phase = $vacuum_phases[ ($trial - 1) % @vacuum_phases ];
	# refill, then delete about 60% of the rows (random ones), committed
	my $live = sql('SELECT count(*) FROM ledger');
	sql('SELECT count(*) FROM add_rows(' . ($start_rows - $live) . ')') if $live < $start_rows;
	sql('SELECT delete_rows(ARRAY(SELECT id FROM ledger WHERE random() < 0.6))');
	# every page costs 8 ms of delay (hit, miss, dirty: 10, 10, 20; limit
	# 1; delay 2 ms, at most 4 x 2 ms per sleep): each phase lasts from
	# hundreds of milliseconds (indexes) to seconds (heap)
	close_session();
	my $waiter = open_waiter();
	my $vacuum = start_psql('SET vacuum_cost_delay = 2', 'SET vacuum_cost_limit = 1',
		'SET vacuum_cost_page_hit = 10', 'SET vacuum_cost_page_miss = 10', 'VACUUM (INDEX_CLEANUP ON) items');
	my $progress = "FROM pg_stat_progress_vacuum WHERE relid = 'items'::regclass";
	is(wait_in_server($waiter, "SELECT 'started' $progress"), 'started', "$label: VACUUM starts");
	my ($hit, $pid) = split / /, wait_in_server($waiter,
		"SELECT CASE WHEN phase = '$phase' THEN 'hit ' || pid END $progress "
		  . "UNION ALL SELECT 'ended' WHERE NOT EXISTS (SELECT 1 $progress)");
	select(undef, undef, undef, rand(0.4));
	crash_and_restart($label, $mode, grep { defined } $pid);
	$waiter->quit;
	is($hit, 'hit', "$label: VACUUM was killed in phase '$phase'") or diag($vacuum->{err});
	is(finish_psql($vacuum), 0, "$label: VACUUM was still running at the crash");
	note("$label: VACUUM said: " . (split /\n/, $vacuum->{err} || "nothing")[0]);
	check_state($label);
	vacuum_and_write($label);
}

# ---------------------------------------------------------------- (c) CREATE INDEX

# (five phases against modes alternating by two and CONCURRENTLY by four:
# over ten trials every phase meets both modes; undef is a random moment)
my @build_phases = ('training centroids and codebooks', 'assigning and encoding rows', 'writing lists', undef,
	'writing lists');
for my $trial (1 .. $trials)
{
	my $label = "CREATE INDEX, trial $trial";
	my $mode = $trial % 2 ? 'all' : 'postmaster';
	my $concurrently = $trial % 4 == 2 || $trial % 4 == 3 ? 'CONCURRENTLY ' : '';
	my $phase = $build_phases[ ($trial - 1) % @build_phases ];
	sql('DROP INDEX IF EXISTS items_cos');
	my $live = sql('SELECT count(*) FROM ledger');
	sql('SELECT count(*) FROM add_rows(' . ($start_rows - $live) . ')') if $live < $start_rows;
	close_session();
	my $waiter = open_waiter();
	my $build = start_psql(
		"CREATE INDEX ${concurrently}items_cos ON items USING ivfpq (e vector_cosine_ops) WITH (lists = 64, m = 16)");
	my $progress = "FROM pg_stat_progress_create_index WHERE relid = 'items'::regclass";
	my ($started, $pid) = split / /, wait_in_server($waiter, "SELECT 'started ' || pid $progress");
	is($started, 'started', "$label: the build starts");
	my $hit = 'hit';
	if (defined $phase)
	{
		# the phase, or the end of the build if it went by unseen
		$hit = wait_in_server($waiter, "SELECT CASE WHEN phase LIKE '%$phase' THEN 'hit' END $progress "
			  . "UNION ALL SELECT 'ended' WHERE NOT EXISTS (SELECT 1 $progress)");
		select(undef, undef, undef, rand(0.3)) if $phase =~ /training/;
	}
	else
	{
		$phase = 'random moment';
		select(undef, undef, undef, rand(0.6));
	}
	crash_and_restart($label, $mode, grep { defined } $pid);
	$waiter->quit;
	note("$label: CREATE INDEX $concurrently" . ($hit eq 'hit' ? "killed at: $phase" : "$hit before: $phase"));
	my $build_ok = finish_psql($build);
	my $state = sql("SELECT CASE WHEN to_regclass('items_cos') IS NULL THEN 'absent' "
		  . "WHEN (SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('items_cos')) THEN 'valid' "
		  . "ELSE 'invalid' END");
	note("$label: CREATE INDEX " . ($build_ok ? 'completed' : 'did not complete') . ", index $state after restart");
	if ($build_ok)
	{
		is($state, 'valid', "$label: a CREATE INDEX that completed left a valid index");
	}
	elsif ($concurrently)
	{
		like($state, qr/^(absent|invalid|valid)$/, "$label: interrupted CREATE INDEX CONCURRENTLY: index $state");
	}
	else
	{
		like($state, qr/^(absent|valid)$/, "$label: interrupted CREATE INDEX leaves no invalid index ($state)");
	}
	# the table and the other index are intact, and so is items_cos if valid
	check_state($label);
	if ($state ne 'absent')
	{
		# alternately REINDEX it (it must become valid and complete) or DROP it
		if ($trial % 2)
		{
			sql('REINDEX INDEX items_cos');
			is(sql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_cos'::regclass"), 't',
				"$label: REINDEX after the crash makes the index valid");
			check_state("$label, after REINDEX", 'items_cos');
		}
		sql('DROP INDEX items_cos');
	}
	# a new build on the same table succeeds
	sql("CREATE INDEX ${concurrently}items_cos ON items USING ivfpq (e vector_cosine_ops) WITH (lists = 64, m = 16)");
	is(sql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_cos'::regclass"), 't',
		"$label: a new CREATE INDEX succeeds after the crash");
	is(sql('SELECT count(*) FROM pg_index WHERE NOT indisvalid'), '0', "$label: no invalid index remains");
	vacuum_and_write($label);
}

unlike(slurp_file($node->logfile), qr/PANIC|TRAP:|terminated by signal (?!9)/,
	'the server log has no PANIC, assertion failure or crash other than our kills');
$node->stop;
done_testing();
