# ivfpq_verify finds damage: with the server stopped, bytes of the index file
# are changed (a chain that loops, an entry count past the page's capacity,
# a heap TID past the end of the table, a TID at a slot VACUUM emptied, a
# centroid that is NaN, a list page on no chain); after a restart ivfpq_verify reports each, and reports
# nothing once the original file is back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('verify');
$node->init;
$node->append_conf('postgresql.conf', "autovacuum = off\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION ivfpq;
	CREATE TABLE items (id int, e vector(16));
	INSERT INTO items SELECT i, ARRAY(SELECT (i % 13) + random() FROM generate_series(1, 16) d)::vector
	FROM generate_series(1, 6000) i;
	CREATE INDEX items_idx ON items USING ivfpq (e) WITH (lists = 4, m = 4);
});
# A heap slot that VACUUM has emptied (row 1's, after its delete).
my ($free_block, $free_offset) =
  $node->safe_psql('postgres', 'SELECT ctid FROM items WHERE id = 1') =~ /\((\d+),(\d+)\)/;
$node->safe_psql('postgres', 'DELETE FROM items WHERE id = 1');
$node->safe_psql('postgres', 'VACUUM items');
$node->safe_psql('postgres', 'CHECKPOINT');
is($node->safe_psql('postgres', "SELECT count(*) FROM ivfpq_verify('items_idx', true)"), '0',
	'a healthy index has no problems');

my $file = $node->data_dir . '/' . $node->safe_psql('postgres', "SELECT pg_relation_filepath('items_idx')");
my $block_size = 8192;
my $special = $block_size - 16;    # MAXALIGN(sizeof(IvfpqPageOpaqueData))
my $contents = 24;                 # MAXALIGN(SizeOfPageHeaderData)

sub read_file_raw
{
	open(my $fh, '<:raw', $file) or die "$file: $!";
	local $/;
	my $data = <$fh>;
	close $fh;
	return $data;
}

sub write_file_raw
{
	my ($data) = @_;
	open(my $fh, '>:raw', $file) or die "$file: $!";
	print $fh $data;
	close $fh;
}

# Opaque fields of a page: next_block, entry_count, page_type, inserted, page_id.
sub opaque
{
	my ($data, $block) = @_;
	return unpack('L S S S S', substr($data, $block * $block_size + $special, 12));
}

my $original = read_file_raw();
my @list_pages;
for my $block (0 .. length($original) / $block_size - 1)
{
	my ($next, $count, $type, $inserted, $id) = opaque($original, $block);
	push @list_pages, [ $block, $next, $count ] if $id == 0xFF8A && $type == 4 && $count > 0;
}
cmp_ok(scalar(@list_pages), '>=', 4, 'found the list pages in the file');
my ($linked) = grep { $_->[1] != 0xFFFFFFFF } @list_pages;
ok($linked, 'found a list page that links to another');

# Change the file with the server stopped, restart, and return verify's problems.
sub damaged_problems
{
	my ($change) = @_;
	$node->stop;
	my $data = $original;
	$change->(\$data);
	write_file_raw($data);
	$node->start;
	my $problems = $node->safe_psql('postgres',
		"SELECT string_agg(problem, ' | ') FROM ivfpq_verify('items_idx', true)");
	$node->stop;
	write_file_raw($original);
	$node->start;
	return $problems;
}

sub set_opaque_field
{
	my ($data, $block, $offset, $format, $value) = @_;
	substr($$data, $block * $block_size + $special + $offset, length(pack($format, 0))) = pack($format, $value);
}

like(damaged_problems(sub { set_opaque_field($_[0], $linked->[0], 0, 'L', $linked->[0]) }),
	qr/cycle/, 'a chain that links to itself is reported as a cycle');
like(damaged_problems(sub { set_opaque_field($_[0], $list_pages[0][0], 4, 'S', 60000) }),
	qr/entries on a page that holds/, 'an entry count past the capacity is reported');
like(damaged_problems(sub {
			# the first TID's block number (two 16-bit halves) far past the table
			substr(${ $_[0] }, $list_pages[0][0] * $block_size + $contents, 4) = pack('S S', 0x7000, 0);
		}),
	qr/outside table/, 'a heap TID past the end of the table is reported');
like(damaged_problems(sub {
			# the first TID now names the slot VACUUM emptied
			substr(${ $_[0] }, $list_pages[0][0] * $block_size + $contents, 6) =
			  pack('S S S', $free_block >> 16, $free_block & 0xFFFF, $free_offset);
		}),
	qr/an unused slot/, 'an entry pointing at an unused heap slot is reported');
like(damaged_problems(sub {
			# the first centroid value (block 1 holds the centroids) becomes NaN
			substr(${ $_[0] }, 1 * $block_size + $contents, 4) = pack('f', 'NaN');
		}),
	qr/centroid values are not finite/, 'a NaN centroid is reported');
like(damaged_problems(sub {
			# cut a chain after its first page: the rest is on no chain, its rows lose their entries
			set_opaque_field($_[0], $linked->[0], 0, 'L', 0xFFFFFFFF);
		}),
	qr/is on no list's chain.*has no index entry/,
	'pages cut off a chain and the rows they held are reported');

is($node->safe_psql('postgres', "SELECT count(*) FROM ivfpq_verify('items_idx', true)"), '0',
	'with the original file back the index verifies clean');
$node->stop;
done_testing();
