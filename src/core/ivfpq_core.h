/*
 * ivfpq_core.h
 *		Public API of the ivfpq core: distances, training, encoding, distance
 *		tables and ADC scan kernels.
 *
 * The core is plain C++17 on FAISS and knows nothing about Postgres.  This
 * header is the only core header the Postgres glue includes, so it pulls in
 * nothing but <cstddef>/<cstdint> and may be included after postgres.h.
 *
 * Error contract: core functions report failure by throwing (see
 * core_error.h, which only core code includes).  The glue never calls a
 * throwing function directly: it goes through InvokeGuarded(), which catches
 * everything and hands back a plain Failure record; the glue then raises
 * ereport() once no C++ frame is left on the stack.
 *
 * Conventions: vectors are float32, row-major; "dim" is the number of
 * dimensions; an "ordering distance" is a value where smaller is better (L2
 * uses squared distance, inner product uses the negated product).
 */
#ifndef IVFPQ_CORE_H
#define IVFPQ_CORE_H

#include <cstddef>
#include <cstdint>

namespace ivfpq::core {

/* ---------- errors and the guard ---------- */

enum class ErrorKind : int
{
	None = 0,
	InvalidParameter = 1,	/* caller passed something unusable (22023) */
	DataException = 2,		/* bad data, e.g. NaN in a training vector (22000) */
	OutOfMemory = 3,		/* std::bad_alloc or a budget exceeded (53200) */
	Cancelled = 4,			/* the interrupt check asked us to stop (57014) */
	Internal = 5,			/* a bug or an unexpected library failure (XX000) */
	Unknown = 6				/* something that was not a std::exception (XX000) */
};

/* Plain-old-data description of a failure, filled by InvokeGuarded(). */
struct Failure
{
	ErrorKind	kind;
	char		message[1024];
};

/*
 * Run fn(arg), catching every exception (including "...").  Returns true on
 * success; on failure returns false with *failure filled in.  Never throws.
 */
bool		InvokeGuarded(void (*fn) (void *), void *arg, Failure *failure) noexcept;

/*
 * Cancellation: the glue installs a function that says whether the caller
 * wants the current computation to stop (Postgres: a query cancel or a
 * terminate request is pending, QueryCancelPending || ProcDiePending).  Core
 * loops and FAISS (through its InterruptCallback) poll it; when it returns
 * true the computation throws a Cancelled error.  The function may be called
 * from any thread, so it must only read a flag.
 */
using InterruptCheck = bool (*) ();
void		SetInterruptCheck(InterruptCheck check);
/* Throws a Cancelled error if the installed check says so. */
void		CheckInterrupt();

/* ---------- distance kernels (runtime CPU dispatch) ---------- */

enum class KernelSet : int
{
	Auto = 0,		/* best available on this CPU */
	Portable = 1,	/* plain C++ loops */
	Avx2 = 2		/* AVX2 + FMA; only selectable when the CPU has them */
};

/* Select kernels; returns false (and changes nothing) if unsupported here. */
bool		UseKernels(KernelSet set);
/* "avx2+fma" or "portable": the kernels in use now. */
const char *ActiveKernelName();

float		L2SquaredDistance(const float *a, const float *b, size_t dim);
float		InnerProduct(const float *a, const float *b, size_t dim);
float		SquaredNorm(const float *a, size_t dim);
/* Cosine distance 1 - a.b/(|a||b|); NaN if either vector has zero norm. */
double		CosineDistance(const float *a, const float *b, size_t dim);

/* ---------- k-means (FAISS) ---------- */

/*
 * Train k centroids on n x dim points with FAISS k-means (L2).  Writes
 * k x dim floats to centroids_out and returns the iterations run.  With
 * tolerance > 0 it stops before 'iterations' once an iteration lowers the
 * k-means objective (sum of squared distances to the nearest centroid) by
 * less than that fraction; the result is then exactly the first iterations
 * of the full run.  Throws InvalidParameter if n < k or k or dim is 0;
 * Cancelled if interrupted.  threads <= 0 means "leave as is".
 */
int			KMeans(const float *points, size_t n, size_t dim, size_t k,
				   int iterations, uint64_t seed, int threads,
				   float *centroids_out, double tolerance = 0.0);

/* ---------- the IVF_PQ quantizer ---------- */

enum class Metric : int
{
	L2 = 0,				/* ordering distance: squared L2 */
	InnerProduct = 1,	/* ordering distance: -(q . x) */
	Cosine = 2			/* caller normalizes vectors; then as L2 */
};

/*
 * The shape of a quantizer: dimensions, lists, sub-quantizers (bytes per
 * code), bits per sub-quantizer code, metric.  Defined once here; a trained
 * quantizer (QuantizerView) and a training run (TrainConfig) are a shape plus
 * their own fields.  The glue stores the same five values on the metapage.
 */
struct QuantizerShape
{
	size_t		dim;
	size_t		lists;
	size_t		m;
	size_t		nbits;				/* 8, or 4 (fast scan; m even) */
	Metric		metric;
};

/*
 * A trained quantizer, as a view over arrays owned by the caller (the glue
 * keeps them in a Postgres memory context).
 *	centroids:	lists x dim
 *	codebooks:	m x ksub x dsub, dsub = dim / m, ksub = 1 << nbits
 */
struct QuantizerView : QuantizerShape
{
	const float *centroids;
	const float *codebooks;
};

inline size_t
SubDim(const QuantizerView &q)
{
	return q.dim / q.m;
}

inline size_t
CodebookSize(const QuantizerView &q)
{
	return size_t(1) << q.nbits;
}

/* A training run: the shape to train (metric is not used: training is L2). */
struct TrainConfig : QuantizerShape
{
	int			coarse_iterations;	/* most k-means iterations for centroids */
	int			pq_iterations;		/* most k-means iterations per sub-quantizer */
	size_t		max_pq_rows;		/* residual rows used to train the PQ; 0 = all */
	uint64_t	seed;
	int			threads;			/* OpenMP threads for training; <= 0 = as is */

	/*
	 * Early stopping of every k-means (coarse and per sub-quantizer): stop
	 * once an iteration lowers the objective by less than this fraction of
	 * it.  0 runs every iteration.
	 */
	double		tolerance = 0.0;
};

/* What a training run did (for tests and reports). */
struct TrainReport
{
	int			coarse_iterations;	/* coarse k-means iterations run */
	int			pq_iterations_max;	/* most iterations any sub-quantizer ran */
	double		pq_iterations_mean;	/* mean over the sub-quantizers */
};

/*
 * Bytes of working memory Train() needs beyond the sample itself, so the
 * glue can check maintenance_work_mem before starting.
 */
size_t		TrainingMemoryBytes(const TrainConfig &config, size_t sample_rows);

/*
 * Train coarse centroids and residual PQ codebooks on sample (n x dim; for
 * Cosine the caller has normalized it).  Writes lists x dim floats to
 * centroids_out and m x ksub x dsub floats to codebooks_out.  If n is smaller
 * than lists or than ksub the training still succeeds with duplicated
 * centroids (a tiny table must still get a working index); n must be >= 1.
 * Throws InvalidParameter for inconsistent dims (dim % m != 0, nbits not 4
 * or 8, odd m with nbits 4).
 */
void		Train(const TrainConfig &config, const float *sample, size_t n,
				  float *centroids_out, float *codebooks_out,
				  TrainReport *report = nullptr);

/*
 * Nearest centroid (L2) for each of n vectors: lists_out[i] in [0, lists).
 * Insertion always assigns by L2 (residuals stay small), whatever the metric.
 */
void		AssignLists(const QuantizerView &q, const float *x, size_t n,
						int32_t *lists_out);

/*
 * Optional "coarse bound" (coarse_bound.cpp): a projection of the centroids
 * onto the few directions in which they vary most, giving a lower bound on
 * the distance from a vector to every centroid at a fraction of the cost, so
 * that NearestListsBounded() reads only the centroids the bound cannot rule
 * out.  Worth it only for large quantizers: CoarseBoundFloats() is 0 (and
 * the bound must not be prepared) below 256 lists, 64 dimensions or 1 MB of
 * centroids.  The caller allocates CoarseBoundFloats(q) floats (about
 * (2 x dim + lists) x 64 x 4 bytes: 650 kB for 1000 lists of 768 dimensions)
 * and fills them once with PrepareCoarseBound() (tens of milliseconds).
 */
size_t		CoarseBoundWidth(const QuantizerView &q);
size_t		CoarseBoundFloats(const QuantizerView &q);
void		PrepareCoarseBound(const QuantizerView &q, float *bound_out);

/*
 * The count nearest centroids (squared L2) of one vector x: lists_out and
 * distances_out get min(count, lists) entries, nearest first, ties to the
 * lower list number; exactly what a scan of every centroid with
 * L2SquaredDistance() would give (a centroid is skipped only when its bound
 * exceeds the count-th best distance by more than float rounding can
 * explain).  Returns how many exact centroid distances it computed.
 */
size_t		NearestListsBounded(const QuantizerView &q, const float *bound, const float *x,
								size_t count, int32_t *lists_out, float *distances_out);

/*
 * PQ-encode the residuals x[i] - centroid[lists[i]]: writes n codes of
 * CodeBytes(m, nbits) bytes (row-major, see "codes" below) to codes_out.
 */
void		EncodeResiduals(const QuantizerView &q, const float *x,
							const int32_t *lists, size_t n, uint8_t *codes_out);

/*
 * AssignLists() then EncodeResiduals() for one batch, when 'participants'
 * processes (a parallel index build: workers and leader) encode batches at
 * the same time: each call uses its share of the OpenMP threads (at least
 * one), so the processes do not oversubscribe the CPUs and spin-wait on each
 * other.  participants <= 1 leaves the thread count as it is.
 */
void		AssignAndEncode(const QuantizerView &q, const float *x, size_t n,
							int participants, int32_t *lists_out, uint8_t *codes_out);

/*
 * Ordering distance from query to every centroid, used to choose the lists
 * to probe (smaller = probe first).  L2/Cosine: squared L2; InnerProduct:
 * -(q . c).  Writes q.lists floats.
 */
void		CentroidDistances(const QuantizerView &q, const float *query,
							  float *distances_out);

/*
 * Distance table of one list for a query: table_out gets m x ksub floats and
 * *bias_out a constant, so that the ADC ordering distance of a code c is
 *		bias + sum_j table[j * ksub + c[j]].
 * L2/Cosine: table over the residual query - centroid[list], bias 0.
 * InnerProduct: table = -(query_j . codeword), bias = -(query . centroid).
 */
void		ComputeDistanceTable(const QuantizerView &q, const float *query,
								 int32_t list, float *table_out, float *bias_out);

/*
 * Optional "prepared quantizer": the codebooks transposed per sub-quantizer
 * (dsub x ksub) plus the squared norm of every codeword, so the functions
 * below run 8 codewords per FMA instead of reducing one codeword at a time.
 * The caller allocates PreparedQuantizerFloats(q) floats (about
 * (dim + m) * ksub * 4 bytes: 860 kB for dim 784, m 56), fills them once per
 * quantizer with PrepareQuantizer() (~0.12 ms for that size) and may keep
 * them as long as the quantizer does, e.g. next to it in a cache.  Results
 * equal the unprepared functions up to float rounding (the prepared L2 table
 * is computed as ||r||^2 + ||c||^2 - 2 r.c).  Measured with dim 784, m 56 on
 * AVX2: ComputeDistanceTable ~16 us, ComputeDistanceTablePrepared ~8 us; a
 * single-row EncodeResiduals ~25 us, EncodeResidualsPrepared ~12 us.  Large
 * EncodeResiduals batches prepare internally, so they gain nothing.
 * prepared must stay valid (and unchanged) for the duration of each call.
 */
size_t		PreparedQuantizerFloats(const QuantizerView &q);
void		PrepareQuantizer(const QuantizerView &q, float *prepared_out);

/* ComputeDistanceTable() using a prepared quantizer. */
void		ComputeDistanceTablePrepared(const QuantizerView &q, const float *prepared,
										 const float *query, int32_t list,
										 float *table_out, float *bias_out);

/* EncodeResiduals() using a prepared quantizer. */
void		EncodeResidualsPrepared(const QuantizerView &q, const float *prepared,
									const float *x, const int32_t *lists, size_t n,
									uint8_t *codes_out);

/*
 * Term tables (L2 and cosine only): a list's distance table split into a
 * per-list part, precomputed once and stored in 8 bits, and a per-query part.
 * For a query whose squared distance to the list's centroid is D
 * ("mean" below is the centroids' centre, their per-dimension median):
 *		CentroidCenter(q, mean)										once per quantizer
 *		ComputeTermTable(q, prepared, mean, list, term_table)		once per list
 *		ComputeQueryTerms(q, prepared, mean, query, query_terms)	once per query
 *		TableFromTerms(q, term_table[list], query_terms, table) per probed list
 * gives a table whose ADC sums plus bias D approximate the exact
 * ComputeDistanceTable() result (up to the 8-bit rounding of the terms).
 *	TermTableBytes:	bytes of one list's term table (m x (ksub + 8))
 */
size_t		TermTableBytes(const QuantizerView &q);
/* mean_out (dim floats): the per-dimension median of the centroids, the origin of both parts. */
void		CentroidCenter(const QuantizerView &q, float *mean_out);
void		ComputeTermTable(const QuantizerView &q, const float *prepared, const float *mean,
							 int32_t list, uint8_t *term_table_out);
void		ComputeQueryTerms(const QuantizerView &q, const float *prepared, const float *mean,
							  const float *query, float *query_terms_out);
void		TableFromTerms(const QuantizerView &q, const uint8_t *term_table,
						   const float *query_terms, float *table_out);

/* ---------- codes ---------- */

/*
 * A PQ code as the core hands it out (EncodeResiduals) and takes it back
 * (StoreBlockedCode): row-major, CodeBytes(m, nbits) bytes.  8-bit codes
 * have one byte per sub-quantizer; 4-bit codes pack sub-quantizers 2p (low
 * nibble) and 2p + 1 (high nibble) into byte p.
 */
inline size_t
CodeBytes(size_t m, size_t nbits)
{
	return (m * nbits + 7) / 8;
}

/* Sub-quantizer j of a row-major code. */
inline uint8_t
CodeValue(const uint8_t *code, size_t j, size_t nbits)
{
	if (nbits == 4)
		return uint8_t((code[j / 2] >> (4 * (j % 2))) & 0x0f);
	return code[j];
}

/* Set sub-quantizer j of a row-major code; 4-bit: set j = 2p before 2p + 1. */
inline void
SetCodeValue(uint8_t *code, size_t j, size_t nbits, uint8_t value)
{
	if (nbits != 4)
		code[j] = value;
	else if (j % 2 == 0)
		code[j / 2] = value;
	else
		code[j / 2] = uint8_t(code[j / 2] | (value << 4));
}

/* ---------- blocked code layout and the ADC scan ---------- */

/*
 * On list pages codes are stored in blocks of kCodeBlock entries; inside a
 * block the bytes are sub-quantizer major: byte (j * kCodeBlock + i) is
 * sub-quantizer j of entry i.  Entry e of an area lives in block
 * e / kCodeBlock.  This lets the scan kernel load one byte of 8 codes at once.
 */
constexpr size_t kCodeBlock = 8;

/* Bytes needed for n entries (rounded up to whole blocks). */
inline size_t
BlockedCodeBytes(size_t n, size_t m)
{
	return (n + kCodeBlock - 1) / kCodeBlock * kCodeBlock * m;
}

/* Write/read entry 'index' of a blocked area from/to a row-major m-byte code. */
void		StoreBlockedCode(uint8_t *blocks, size_t index, size_t m,
							 const uint8_t *code);
void		LoadBlockedCode(const uint8_t *blocks, size_t index, size_t m,
							uint8_t *code);

/*
 * ADC scan: for entries [0, n) of a blocked area, out[i] = bias + sum_j
 * table[j * ksub + code_i[j]].  Bytes of a partial last block beyond n are
 * read but their results are not written.
 */
void		ScanBlockedCodes(const float *table, size_t m, size_t ksub,
							 const uint8_t *blocks, size_t n, float bias,
							 float *out);

/*
 * The blocked layout of either code size: 8-bit codes as above (blocks of
 * kCodeBlock), 4-bit codes in the fast-scan layout (blocks of
 * kFastScanBlock, see below).  'code' is row-major, CodeBytes(m, nbits).
 */
inline size_t
CodeBlockEntries(size_t nbits)
{
	return nbits == 4 ? 32 : kCodeBlock;
}

inline size_t
BlockedCodeBytes(size_t n, size_t m, size_t nbits)
{
	size_t		block = CodeBlockEntries(nbits);

	return (n + block - 1) / block * block * CodeBytes(m, nbits);
}

void		StoreBlockedCode(uint8_t *blocks, size_t index, size_t m, size_t nbits,
							 const uint8_t *code);
void		LoadBlockedCode(const uint8_t *blocks, size_t index, size_t m, size_t nbits,
							uint8_t *code);

/* ---------- 4-bit fast scan (fast_scan.cpp) ---------- */

/*
 * The fast-scan layout of 4-bit codes, after FAISS's IndexPQFastScan: codes
 * in blocks of kFastScanBlock = 32 entries; a block holds m / 2 groups of 32
 * bytes, group p for sub-quantizers 2p and 2p + 1.  In group p,
 *	byte i (0..15):		 low nibble: sub-quantizer 2p of entry i,
 *						 high nibble: sub-quantizer 2p of entry i + 16;
 *	byte 16 + i (0..15): the same for sub-quantizer 2p + 1.
 * So one 32-byte load, masked to its low (or shifted to its high) nibbles,
 * is a vector of 16-entry table indexes whose lower 128-bit lane looks up
 * sub-quantizer 2p's table and whose upper lane sub-quantizer 2p + 1's: one
 * pshufb against the two tables (16 bytes each, side by side) gives 32
 * table values.
 *
 * The distance table of a list is quantized to 8 bits (QuantizeFastScanTable):
 * per sub-quantizer its minimum is taken out, then all entries are scaled by
 * one common factor so that every entry fits 255 and the sum over all m
 * sub-quantizers fits 65535, so the kernel adds in 16 bits without overflow
 * and every kernel variant computes the same integer sums.  The distance of
 * an entry is then offset + step * sum, within m * step / 2 of the float ADC
 * distance (rounding of each entry by at most half a step).
 */
constexpr size_t kFastScanBlock = 32;
constexpr size_t kFastScanKsub = 16;

/* A quantized 4-bit distance table: lut = m x 16 bytes (caller-owned). */
struct FastScanTable
{
	const uint8_t *lut;
	size_t		m;
	float		step;			/* distance of one unit of a sum */
	float		offset;			/* distance of a sum of 0 (includes the bias) */
};



/* Fast-scan kernels; Auto picks AVX2, else SSSE3, else portable (at run time). */
enum class FastScanKernel : int
{
	Auto = 0,
	Portable = 1,
	Ssse3 = 2,
	Avx2 = 3
};

/*
 * Quantize a float table (m x 16, as ComputeDistanceTable writes for nbits 4)
 * plus its bias into lut_out (m x 16 bytes); returns step and offset.  Every
 * kernel writes the same bytes (the AVX2 one is only faster).
 */
void		QuantizeFastScanTable(const float *table, size_t m, float bias,
								  uint8_t *lut_out, float *step_out, float *offset_out,
								  FastScanKernel kernel = FastScanKernel::Auto);

bool		FastScanKernelSupported(FastScanKernel kernel);
/* "avx2", "ssse3" or "portable": what Auto uses now. */
const char *FastScanKernelName();

/*
 * Integer sums sum_j lut[j][code_i[j]] of entries [0, n) of a fast-scan area
 * (the scale-free result, identical for every kernel).  Bytes of a partial
 * last block beyond n are read but their sums are not written.  Throws
 * InvalidParameter for an unsupported kernel.
 */
void		FastScanSums(const FastScanTable &table, const uint8_t *blocks, size_t n,
						 uint16_t *sums_out, FastScanKernel kernel = FastScanKernel::Auto);

/* Distances offset + step * sum of entries [0, n) (the scan's ADC distances). */
void		FastScanDistances(const FastScanTable &table, const uint8_t *blocks, size_t n,
							  float *out, FastScanKernel kernel = FastScanKernel::Auto);

/*
 * How far a FastScanDistances() distance may lie from the float ADC distance
 * of the same entry: m x step / 2 for the rounding of the table, plus room
 * for float rounding of sums of that magnitude.  A candidate whose fast
 * distance exceeds a threshold by more than this cannot be below it.
 */
float		FastScanErrorBound(const FastScanTable &table, float distance);

/*
 * The float ADC distance bias + sum_j table[j * 16 + code_j] of entry
 * 'index' of a fast-scan area (table: m x 16 floats, unquantized), to refine
 * the candidates the quantized distances let through.
 */
float		FastScanEntryDistance(const float *table, size_t m, const uint8_t *blocks,
								  size_t index, float bias);

/*
 * Refine the fast distances of a scan so that its best 'heap_capacity'
 * candidates are chosen by float ADC distances, as with 8-bit codes: every
 * entry i < n (with pass == nullptr or pass[i]) whose fast distance
 * distances[i] could be below the heap_capacity-th smallest refined distance
 * seen so far (heap: a max-heap of them, *heap_count in use, kept by the
 * caller across pages and lists) gets its float ADC distance
 * (FastScanEntryDistance) in distances[i] and enters the heap.  Entries
 * left alone keep their fast distance, which exceeds that threshold: so the
 * heap_capacity smallest distances of the scan are exactly the float ADC
 * ones.  Returns how many entries it refined.
 */
size_t		FastScanRefine(const FastScanTable &fast, const float *table, float bias,
						   const uint8_t *blocks, size_t n, const bool *pass,
						   float *distances, float *heap, size_t heap_capacity,
						   size_t *heap_count);

/* ---------- pglz (pglz.cpp) ---------- */

/* Spare bytes PglzDecompress may write past dest + raw_size. */
constexpr size_t kPglzSlack = 16;

/*
 * Decompress src (src_len bytes of Postgres's pglz format, the data of a
 * compressed varlena after its header) into dest, which must have room for
 * raw_size + kPglzSlack bytes.  Returns true when the input decodes to
 * exactly raw_size bytes and is consumed exactly; false for malformed input
 * (the caller then lets the server's decoder report it).  Never throws.
 */
bool		PglzDecompress(const uint8_t *src, size_t src_len, uint8_t *dest, size_t raw_size) noexcept;

}							/* namespace ivfpq::core */

#endif							/* IVFPQ_CORE_H */
