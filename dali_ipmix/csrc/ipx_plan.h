// dali-ipmix compiled core, host side: the random plan of one sample, drawn in C++, and its plan-table
// rows (IpxStep, ipx_core.cuh).
//
// What is drawn, and with which distributions, is dali_ipmix.plan.draw_plan's (per sample: Dirichlet
// chain weights, m ~ Beta(1, 1); per chain: kind, op count; per step: image op, level, sign, patch
// rectangle, pixel op, get_ab(beta), mask threshold and key, patch source). The generator is our own
// (xoshiro256** seeded through SplitMix64 from a key such as (seed, batch, sample, view)), so a draw
// depends on its key only: not on the thread that runs it, nor on the standard library.
// ipx_op_parameters holds the magnitude laws (dali_ipmix.ops) exactly as dali_ipmix.table.op_parameters
// evaluates them (float64, same operation order, then float32), so ipx_pack_sample writes the rows
// that table.pack_plan writes for the same draws, bit for bit. Host only (used by the native DALI
// operator and by the tests' g++ shim); no DALI dependency.
#ifndef DALI_IPMIX_IPX_PLAN_H
#define DALI_IPMIX_IPX_PLAN_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "ipx_core.cuh"

// ------------------------------------------------------------------ generator

struct IpxRng {
    uint64_t s[4];
};

static inline uint64_t ipx_splitmix64(uint64_t* x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// A generator for key (a, b, c, d): every word of the key goes through SplitMix64 in turn, so keys
// that differ in any word give unrelated streams.
static inline IpxRng ipx_rng(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    uint64_t x = 0x6A09E667F3BCC908ull;
    const uint64_t key[4] = {a, b, c, d};
    for (int i = 0; i < 4; ++i) {
        x ^= key[i];
        x = ipx_splitmix64(&x);
    }
    IpxRng r;
    for (int i = 0; i < 4; ++i) r.s[i] = ipx_splitmix64(&x);
    return r;
}

static inline uint64_t ipx_rotl(uint64_t v, int k) { return (v << k) | (v >> (64 - k)); }

static inline uint64_t ipx_next(IpxRng* r) {   // xoshiro256**
    uint64_t* s = r->s;
    uint64_t out = ipx_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ipx_rotl(s[3], 45);
    return out;
}

// Uniform on [0, 1), 53 random bits.
static inline double ipx_uniform(IpxRng* r) { return (double)(ipx_next(r) >> 11) * 0x1.0p-53; }

// Uniform integer in [low, high] (inclusive), as plan._uniform_int: low + floor(U * (high - low + 1)).
static inline int ipx_uniform_int(IpxRng* r, int low, int high) {
    return low + (int)floor(ipx_uniform(r) * (double)(high - low + 1));
}

// Beta(a, 1) by inversion: U^(1/a). Beta(1, b) = 1 - Beta(b, 1).
static inline double ipx_beta_a1(IpxRng* r, double a) { return pow(1.0 - ipx_uniform(r), 1.0 / a); }
static inline double ipx_beta_1b(IpxRng* r, double b) { return 1.0 - ipx_beta_a1(r, b); }

// ------------------------------------------------------------------ config and draws

// The IPMix parameters the operator draws with (dali_ipmix.IPMixConfig).
struct IpxConfig {
    int k = 3, t = 3;
    double beta = 4.0, severity = 1.0;
    std::vector<int> patch_sizes;       // candidate patch edges, pixels (>= 2)
    bool whole_image_patch = true;      // also the image's shorter side
    std::vector<int> op_codes;          // image-level ops drawn from (IPX_OP_*); draws index this list
    bool source_from_image = true;
    int steps() const { return t > 0 ? t : 1; }   // t = 0 keeps one (inactive) step, as draw_plan
};

// IPMixConfig.patch_sizes_for: usable patch edges for an h x w image, ascending; empty if none fits.
static inline std::vector<int> ipx_patch_sizes_for(const IpxConfig& cfg, int h, int w) {
    int side = h < w ? h : w;
    std::vector<int> out;
    for (int s : cfg.patch_sizes)
        if (s <= side) out.push_back(s);
    if (cfg.whole_image_patch) out.push_back(side);
    std::vector<int> sorted;   // sorted, unique (the lists are a handful of entries)
    for (int pass = 0; pass < (int)out.size(); ++pass) {
        int best = -1;
        for (int s : out)
            if ((sorted.empty() || s > sorted.back()) && (best < 0 || s < best)) best = s;
        if (best < 0) break;
        sorted.push_back(best);
    }
    return sorted;
}

// One step's draws (a field of dali_ipmix.plan.IPMixPlan each, same meaning).
struct IpxDrawStep {
    int op;            // index into IpxConfig::op_codes
    double level;
    int sign;          // -1 or +1
    int size, top, left, height, width;   // patch edge, corner, rectangle (pixels)
    int pixel_op;      // IPX_ADD..IPX_RANDOM_ELEMS
    double wa, wb, p;
    uint32_t mask_key;
    int from_image;
    int src_op;
    double src_level;
    int src_sign;
};

// Doubles per step in the plan record (ipx_write_plan), in this order; dali_ipmix.native mirrors it.
#define IPX_PLAN_STEP_FIELDS 17

struct IpxDraw {
    std::vector<double> weights;   // k
    double m = 0.0;
    std::vector<int> kind, n_ops;  // k each
    std::vector<IpxDrawStep> steps;   // k * cfg.steps(), chain-major
};

// Draws one sample's plan for an h x w image. `sizes` is ipx_patch_sizes_for(cfg, h, w), not empty.
static inline void ipx_draw_sample(const IpxConfig& cfg, const std::vector<int>& sizes, int h, int w,
                                   IpxRng* r, IpxDraw* d) {
    int k = cfg.k, tt = cfg.steps();
    int n_ops = (int)cfg.op_codes.size(), n_sizes = (int)sizes.size();
    d->weights.assign(k, 1.0);
    if (k > 1) {   // Dirichlet(1, ..., 1): normalised Exp(1) draws
        double sum = 0.0;
        for (int c = 0; c < k; ++c) sum += (d->weights[c] = -log(1.0 - ipx_uniform(r)));
        for (int c = 0; c < k; ++c) d->weights[c] /= sum;
    }
    d->m = ipx_uniform(r);   // Beta(1, 1)
    d->kind.resize(k);
    d->n_ops.resize(k);
    for (int c = 0; c < k; ++c) {
        d->kind[c] = ipx_uniform_int(r, 0, 1);
        d->n_ops[c] = ipx_uniform_int(r, 0, cfg.t);
    }
    d->steps.resize((size_t)k * tt);
    for (IpxDrawStep& e : d->steps) {
        e.op = ipx_uniform_int(r, 0, n_ops - 1);
        e.level = 0.1 + (cfg.severity - 0.1) * ipx_uniform(r);
        e.sign = ipx_uniform(r) < 0.5 ? -1 : 1;
        e.size = sizes[ipx_uniform_int(r, 0, n_sizes - 1)];
        bool square = ipx_uniform(r) < 0.5;
        e.width = square ? e.size : ipx_uniform_int(r, 2, e.size);
        e.height = square ? e.size : ipx_uniform_int(r, 2, e.size);
        e.left = ipx_uniform_int(r, 0, w - e.size);
        e.top = ipx_uniform_int(r, 0, h - e.size);
        e.pixel_op = ipx_uniform_int(r, 0, 3);
        if (ipx_uniform(r) < 0.5) {   // get_ab(beta)
            e.wa = ipx_beta_a1(r, cfg.beta);
            e.wb = ipx_beta_1b(r, cfg.beta);
        } else {
            e.wa = 1.0 + ipx_beta_1b(r, cfg.beta);
            e.wb = -ipx_beta_1b(r, cfg.beta);
        }
        e.p = ipx_uniform(r);
        e.mask_key = (uint32_t)(ipx_next(r) >> 32);
        e.from_image = (ipx_uniform(r) < 0.5) && cfg.source_from_image;
        e.src_op = ipx_uniform_int(r, 0, n_ops - 1);
        e.src_level = 0.1 + (cfg.severity - 0.1) * ipx_uniform(r);
        e.src_sign = ipx_uniform(r) < 0.5 ? -1 : 1;
    }
}

// Doubles in one sample's plan record: weights (k), m, kind (k), n_ops (k), then k * steps() steps
// of IPX_PLAN_STEP_FIELDS.
static inline long long ipx_plan_doubles(const IpxConfig& cfg) {
    return 1 + 3LL * cfg.k + (long long)cfg.k * cfg.steps() * IPX_PLAN_STEP_FIELDS;
}

static inline void ipx_write_plan(const IpxDraw& d, double* out) {
    int k = (int)d.weights.size();
    for (int c = 0; c < k; ++c) *out++ = d.weights[c];
    *out++ = d.m;
    for (int c = 0; c < k; ++c) *out++ = d.kind[c];
    for (int c = 0; c < k; ++c) *out++ = d.n_ops[c];
    for (const IpxDrawStep& e : d.steps) {
        const double f[IPX_PLAN_STEP_FIELDS] = {
            (double)e.op, e.level, (double)e.sign, (double)e.size, (double)e.top, (double)e.left,
            (double)e.height, (double)e.width, (double)e.pixel_op, e.wa, e.wb, e.p,
            (double)e.mask_key, (double)e.from_image, (double)e.src_op, e.src_level,
            (double)e.src_sign};
        memcpy(out, f, sizeof(f));
        out += IPX_PLAN_STEP_FIELDS;
    }
}

// ------------------------------------------------------------------ magnitude laws

// NumPy's float64 floor division (npy_divmod), which `x // 100` in ops/table uses.
static inline double ipx_floor_divide(double a, double b) {
    double mod = fmod(a, b);
    if (b == 0.0) return a / b;
    double div = (a - mod) / b;
    if (mod != 0.0) {
        if ((b < 0) != (mod < 0)) div -= 1.0;
    }
    double floordiv;
    if (div != 0.0) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
        floordiv = copysign(0.0, a / b);
    }
    return floordiv;
}

// numpy.round(x, 15): multiply, round half to even, divide.
static inline double ipx_round15(double x) { return nearbyint(x * 1e15) / 1e15; }

// Kernel parameters of image-level op `code` at (level, sign) on an h x w image: p (6 floats: the
// affine matrix a b c d e f, or p[0] = bits / threshold / factor / cutoff) and the autocontrast cut
// (pixels per histogram end). table.op_parameters, entry by entry.
static inline void ipx_op_parameters(int code, double level, int sign, int h, int w, float* p,
                                     int* cut) {
    double v = 0.0, sg = (double)sign;
    double m[6] = {0, 0, 0, 0, 0, 0};
    bool affine = code >= IPX_FIRST_AFFINE;
    *cut = 0;
    switch (code) {
        case IPX_OP_POSTERIZE: v = 4 - floor(level * 4 / 10.0); break;
        case IPX_OP_SOLARIZE: v = 256 - floor(level * 256 / 10.0); break;
        case IPX_OP_AUTOCONTRAST:
            v = 10 - level * 10 / 10.0;
            *cut = (int)floor(ipx_floor_divide((double)((long long)h * w) * v, 100.0));
            break;
        case IPX_OP_BRIGHTNESS: case IPX_OP_CONTRAST: case IPX_OP_COLOR: case IPX_OP_SHARPNESS:
            v = level * 1.8 / 10.0 + 0.1;
            break;
        case IPX_OP_ROTATE: {
            double degrees = floor(level * 30 / 10.0) * sg;
            double angle = -(degrees * (3.141592653589793 / 180.0));   // numpy.radians
            double cs = ipx_round15(cos(angle)), sn = ipx_round15(sin(angle));
            double cx = w / 2.0, cy = h / 2.0;
            double c = cs * -cx + sn * -cy + cx;
            double f = -sn * -cx + cs * -cy + cy;
            const double r[6] = {cs, sn, c, -sn, cs, f};
            memcpy(m, r, sizeof(m));
            break;
        }
        case IPX_OP_SHEAR_X: { double s = level * 0.3 / 10.0 * sg; const double r[6] = {1, s, 0, 0, 1, 0}; memcpy(m, r, sizeof(m)); break; }
        case IPX_OP_SHEAR_Y: { double s = level * 0.3 / 10.0 * sg; const double r[6] = {1, 0, 0, s, 1, 0}; memcpy(m, r, sizeof(m)); break; }
        case IPX_OP_TRANSLATE_X: { double d = floor(level * (w / 3.0) / 10.0) * sg; const double r[6] = {1, 0, d, 0, 1, 0}; memcpy(m, r, sizeof(m)); break; }
        case IPX_OP_TRANSLATE_Y: { double d = floor(level * (h / 3.0) / 10.0) * sg; const double r[6] = {1, 0, 0, 0, 1, d}; memcpy(m, r, sizeof(m)); break; }
        case IPX_OP_MIRROR: { const double r[6] = {-1, 0, (double)w, 0, 1, 0}; memcpy(m, r, sizeof(m)); break; }
        default: break;   // invert, equalize: no parameter
    }
    for (int i = 0; i < 6; ++i) p[i] = 0.0f;
    if (affine) {
        for (int i = 0; i < 6; ++i) p[i] = (float)m[i];
    } else {
        p[0] = (float)v;
    }
}

// The sample's plan-table rows (k * cfg.steps() IpxStep, chain-major) and its mix row (m, w_0..w_k-1),
// as table.pack_plan writes them.
static inline void ipx_pack_sample(const IpxConfig& cfg, const IpxDraw& d, int h, int w, IpxStep* rows,
                                   float* mixw) {
    int k = cfg.k, tt = cfg.steps();
    for (int c = 0; c < k; ++c) {
        for (int j = 0; j < tt; ++j) {
            const IpxDrawStep& e = d.steps[(size_t)c * tt + j];
            IpxStep& s = rows[(size_t)c * tt + j];
            memset(&s, 0, sizeof(s));
            s.src_op = IPX_NO_OP;
            s.act = j < d.n_ops[c] ? (d.kind[c] == 0 ? IPX_ACT_IMAGE : IPX_ACT_PATCH) : IPX_ACT_NONE;
            if (s.act == IPX_ACT_IMAGE) {
                s.op = cfg.op_codes[e.op];
                ipx_op_parameters(s.op, e.level, e.sign, h, w, s.p, &s.cut);
            } else if (s.act == IPX_ACT_PATCH) {
                s.pixel_op = e.pixel_op;
                s.top = e.top;
                s.left = e.left;
                s.rect_h = e.height;
                s.rect_w = e.width;
                s.key = e.mask_key;
                s.wa = (float)e.wa;
                s.wb = (float)e.wb;
                s.prob = (float)e.p;
                if (e.from_image) {
                    s.src_op = cfg.op_codes[e.src_op];
                    ipx_op_parameters(s.src_op, e.src_level, e.src_sign, h, w, s.s, &s.src_cut);
                }
            }
        }
    }
    mixw[0] = (float)d.m;
    for (int c = 0; c < k; ++c) mixw[1 + c] = (float)d.weights[c];
}

#endif  // DALI_IPMIX_IPX_PLAN_H
