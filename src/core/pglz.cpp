/*
 * pglz.cpp
 *		A decoder for Postgres's pglz format (the default compression of
 *		TOAST values) that the heap re-rank runs on each compressed candidate
 *		instead of the server's byte-at-a-time decoder.
 *
 * The format: a control byte, then eight items, each a literal byte (its
 * control bit 0) or a back-reference (bit 1) of two or three bytes: the low
 * nibble of the first is the length minus 3, its high nibble and the second
 * byte the offset (1..4095) back into the output; length 18 means a third
 * byte adds 0..255.  Control bits are read from the least significant up.
 *
 * What makes it faster: back-references are copied 8 or 16 bytes at a time
 * (overrunning their end into the caller's kPglzSlack spare bytes, which
 * later items overwrite), a reference to the last 1, 2 or 4 bytes (runs of
 * zero floats are those) is a pattern stored from a register, one to the
 * last 3, 5, 6 or 7 bytes is widened to a period of 8 or more after its
 * first 8 bytes, and a run of literals is one 8-byte copy.
 */
#include <algorithm>
#include <cstring>

#include "ivfpq_core.h"

namespace ivfpq::core {

namespace {

inline void
Copy8(uint8_t *dst, const uint8_t *src)
{
	uint64_t	v;

	std::memcpy(&v, src, 8);
	std::memcpy(dst, &v, 8);
}

inline void
Copy16(uint8_t *dst, const uint8_t *src)
{
	Copy8(dst, src);
	Copy8(dst + 8, src + 8);
}

/*
 * Copy 'len' bytes from dp - off to dp (overlapping when off < len), writing
 * up to 15 bytes past dp + len.  The caller checked 1 <= off <= dp - dest.
 */
inline void
CopyMatch(uint8_t *dp, size_t off, size_t len)
{
	uint8_t    *end = dp + len;
	const uint8_t *from = dp - off;

	if (off >= 16)
	{
		/* Most references: far back, at most 16 bytes, one copy. */
		do
		{
			Copy16(dp, from);
			dp += 16;
			from += 16;
		} while (dp < end);
	}
	else if (off >= 8)
	{
		do
		{
			Copy8(dp, from);
			dp += 8;
			from += 8;
		} while (dp < end);
	}
	else if (off == 1 || off == 2 || off == 4)
	{
		/*
		 * A period that divides 8 (runs of zero floats are off 1 or 4): the
		 * 8-byte pattern is built in a register, then stored without
		 * reading back what was just written.
		 */
		uint64_t	v;

		if (off == 1)
			v = 0x0101010101010101ull * from[0];
		else if (off == 2)
		{
			uint16_t	x;

			std::memcpy(&x, from, 2);
			v = 0x0001000100010001ull * x;
		}
		else
		{
			uint32_t	x;

			std::memcpy(&x, from, 4);
			v = x | (uint64_t(x) << 32);
		}
		do
		{
			std::memcpy(dp, &v, 8);
			dp += 8;
		} while (dp < end);
	}
	else
	{
		/*
		 * Period 3, 5, 6 or 7: write the first 8 bytes one at a time; after
		 * that the output also repeats with period kWide[off], a multiple of
		 * off in 9..14, so the rest goes 8 bytes at a time.
		 */
		static const uint8_t kWide[8] = {0, 8, 8, 9, 8, 10, 12, 14};

		for (size_t i = 0; i < 8; i++)
			dp[i] = from[i];
		dp += 8;
		from = dp - kWide[off];
		while (dp < end)
		{
			Copy8(dp, from);
			dp += 8;
			from += 8;
		}
	}
}

}							/* namespace */

/*
 * The whole control groups while the input holds one more than any group can
 * use (a control byte, 8 three-byte references and an 8-byte literal read):
 * a run of literals is one 8-byte copy and one shift, with no test per
 * literal, and the tests left are ones the branch predictor gets right.
 */
constexpr size_t kGroupInput = 1 + 8 * 3 + 8;

bool
PglzDecompress(const uint8_t *src, size_t src_len, uint8_t *dest, size_t raw_size) noexcept
{
	const uint8_t *sp = src;
	const uint8_t *src_end = src + src_len;
	uint8_t    *dp = dest;
	uint8_t    *dest_end = dest + raw_size;

	while (size_t(src_end - sp) > kGroupInput && dp < dest_end)
	{
		/* Bit 8 marks the end of the control byte's items. */
		unsigned	ctrl = unsigned(*sp++) | 0x100u;

		for (;;)
		{
			size_t		literals = size_t(__builtin_ctz(ctrl));

			if (literals > size_t(dest_end - dp))
			{
				/* The output ends inside the run: the input must end too. */
				literals = size_t(dest_end - dp);
				std::memcpy(dp, sp, literals);
				dp += literals;
				sp += literals;
				goto done;
			}
			Copy8(dp, sp);		/* dest has kPglzSlack spare bytes */
			dp += literals;
			sp += literals;
			ctrl >>= literals;
			if (ctrl == 1 || dp == dest_end)
				break;

			size_t		len = (sp[0] & 0x0f) + 3;
			size_t		off = ((size_t) (sp[0] & 0xf0) << 4) | sp[1];

			sp += 2;
			if (len == 18)
				len += *sp++;
			if (off == 0 || off > (size_t) (dp - dest))
				return false;	/* corrupt: points before the output */
			if (len > (size_t) (dest_end - dp))
				len = (size_t) (dest_end - dp);
			CopyMatch(dp, off, len);
			dp += len;
			ctrl >>= 1;
			if (ctrl == 1 || dp == dest_end)
				break;
		}
	}

	/* The last groups, one item at a time with every bound checked. */
	while (sp < src_end && dp < dest_end)
	{
		unsigned	ctrl = *sp++;

		for (int item = 0; item < 8 && sp < src_end && dp < dest_end; item++, ctrl >>= 1)
		{
			if ((ctrl & 1) == 0)
			{
				*dp++ = *sp++;
				continue;
			}
			if (src_end - sp < 2)
				return false;

			size_t		len = (sp[0] & 0x0f) + 3;
			size_t		off = ((size_t) (sp[0] & 0xf0) << 4) | sp[1];

			sp += 2;
			if (len == 18)
			{
				if (sp >= src_end)
					return false;
				len += *sp++;
			}
			if (off == 0 || off > (size_t) (dp - dest))
				return false;
			if (len > (size_t) (dest_end - dp))
				len = (size_t) (dest_end - dp);
			CopyMatch(dp, off, len);
			dp += len;
		}
	}
done:
	/* As the server's decoder with check_complete: both ends reached exactly. */
	return dp == dest_end && sp == src_end;
}

}							/* namespace ivfpq::core */
