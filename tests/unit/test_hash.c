/*
 * test_hash.c: SHA-256 on the SHA extensions (common/sha256.c) and through
 * hash.h's hashers, against OpenSSL's one-shot digest: every length around
 * the block and padding edges, updates cut anywhere, and two messages fed
 * the same bytes at once (hasher_update2) from any offset in each.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>
#include <openssl/evp.h>

#include "../../common/hash.h"
#include "../../common/sha256.h"
#include "check_main.h"

static void want_sha(uint8_t out[32], const uint8_t *p, size_t n)
{
	unsigned int len = 0;

	ck_assert_int_eq(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
}

static uint8_t *noise(size_t n, unsigned seed)
{
	uint8_t *b = malloc(n ? n : 1);

	ck_assert_ptr_nonnull(b);
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (uint8_t)(seed >> 16);
	}
	return b;
}

START_TEST(test_sha256_ni_equals_openssl_at_every_length_and_cut)
{
	enum { N = 1100 };
	uint8_t *b = noise(N, 1), want[32], got[32];
	struct sha256 c;

	if (!sha256_ni()) {
		free(b);
		return; /* this CPU has no SHA extensions: hash.c uses OpenSSL alone */
	}
	for (size_t n = 0; n <= N; n += n < 200 ? 1 : 13) {
		want_sha(want, b, n);
		sha256_init(&c);
		sha256_update(&c, b, n);
		sha256_final(&c, got);
		ck_assert_msg(!memcmp(got, want, 32), "length %zu in one update", n);
		for (size_t cut = 0; cut <= n; cut += 1 + cut / 3) { /* two updates */
			sha256_init(&c);
			sha256_update(&c, b, cut);
			sha256_update(&c, b + cut, n - cut);
			sha256_final(&c, got);
			ck_assert_msg(!memcmp(got, want, 32), "length %zu cut at %zu", n, cut);
		}
	}
	free(b);
}
END_TEST

/* Messages a = x ++ shared ++ y and b = z ++ shared ++ w, the shared part
 * fed to both at once in pieces of `step` bytes; both digests and CRCs must
 * be OpenSSL's and libdeflate's of the messages. */
static void check_pair(const uint8_t *buf, size_t lx, size_t lz, size_t ls, size_t step, size_t ly)
{
	const uint8_t *x = buf, *z = buf + 3000, *sh = buf + 6000, *y = buf + 200;
	struct hasher *a = hasher_new(), *b = hasher_new();
	struct hash ga, gb;
	uint32_t ca, cb;
	uint8_t *ma = malloc(lx + ls + ly + 1), *mb = malloc(lz + ls + 1), wa[32], wb[32];

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	memcpy(ma, x, lx);
	memcpy(ma + lx, sh, ls);
	memcpy(ma + lx + ls, y, ly);
	memcpy(mb, z, lz);
	memcpy(mb + lz, sh, ls);
	hasher_update(a, x, lx);
	hasher_update(b, z, lz);
	for (size_t at = 0; at < ls; at += step)
		hasher_update2(a, b, sh + at, ls - at < step ? ls - at : step);
	hasher_update(a, y, ly);
	hasher_final(a, &ga, &ca);
	hasher_final(b, &gb, &cb);
	want_sha(wa, ma, lx + ls + ly);
	want_sha(wb, mb, lz + ls);
	ck_assert_msg(!memcmp(ga.b, wa, 32), "a: %zu + %zu (by %zu) + %zu", lx, ls, step, ly);
	ck_assert_msg(!memcmp(gb.b, wb, 32), "b: %zu + %zu (by %zu)", lz, ls, step);
	ck_assert_uint_eq(ca, libdeflate_crc32(0, ma, lx + ls + ly));
	ck_assert_uint_eq(cb, libdeflate_crc32(0, mb, lz + ls));
	hasher_free(a);
	hasher_free(b);
	free(ma);
	free(mb);
}

static void pairs(void)
{
	uint8_t *buf = noise(6000 + 70000, 7);
	static const size_t pre[] = {0, 1, 55, 56, 63, 64, 65, 127, 1000};
	static const size_t len[] = {0, 1, 63, 64, 65, 128, 129, 4096, 70000};
	static const size_t step[] = {1, 7, 64, 100, 1 << 20};

	for (size_t i = 0; i < 9; i++)
		for (size_t j = 0; j < 9; j++)
			for (size_t k = 0; k < 9; k++)
				for (size_t s = 0; s < 5; s++)
					if (len[k] <= 4096 || step[s] >= 64)
						check_pair(buf, pre[i], pre[j], len[k], step[s],
							   pre[(i + j) % 9]);
	free(buf);
}

START_TEST(test_two_messages_fed_the_same_bytes_at_once)
{
	pairs();
}
END_TEST

START_TEST(test_two_messages_at_once_through_openssl_too)
{
	hash_force_openssl(1);
	ck_assert_int_eq(hasher_pairs_fast(), 0);
	pairs();
	hash_force_openssl(0);
}
END_TEST

/* A hasher kept and reused after hasher_final starts afresh. */
START_TEST(test_a_hasher_reused_after_final)
{
	uint8_t *b = noise(5000, 3), want[32];
	struct hasher *h = hasher_new();
	struct hash got;
	uint32_t crc;

	for (int round = 0; round < 3; round++) {
		size_t n = 1000 + 1500 * (size_t)round;
		hasher_update(h, b, 17);
		hasher_update(h, b + 17, n - 17);
		hasher_final(h, &got, &crc);
		want_sha(want, b, n);
		ck_assert_mem_eq(got.b, want, 32);
		ck_assert_uint_eq(crc, libdeflate_crc32(0, b, n));
	}
	hasher_free(h);
	free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("hash");
	TCase *tc = tcase_create("hash");

	tcase_add_test(tc, test_sha256_ni_equals_openssl_at_every_length_and_cut);
	tcase_add_test(tc, test_two_messages_fed_the_same_bytes_at_once);
	tcase_add_test(tc, test_two_messages_at_once_through_openssl_too);
	tcase_add_test(tc, test_a_hasher_reused_after_final);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
