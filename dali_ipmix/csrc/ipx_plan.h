// dali-ipmix compiled core, host side: the random plan of one sample, drawn in C++, and its plan-table
// rows (IpxStep, ipx_core.cuh).
//
// The draw is dali_ipmix.plan.draw_plan's, bit for bit: one sample and view takes ipx_plan_draws(k, t)
// uniforms from a counter-based hash of its key (ipx_stream: SplitMix64, as dali_ipmix.keys), at the
// slots that ipx_laws.h (generated from dali_ipmix/laws.py) names, and turns them into the plan with
// the same float64 formulas in the same order (libm's log and pow, which Python's math module calls
// too). A draw depends on its key only: not on the thread that runs it, nor on the standard library's
// generators. The magnitude laws (ipx_op_parameters) are generated from dali_ipmix/laws.py as well,
// so ipx_pack_sample writes the rows that table.pack_plan writes for the same draws, bit for bit.
// Host only (used by the native DALI operator and by the tests' g++ shim); no DALI dependency.
#ifndef DALI_IPMIX_IPX_PLAN_H
#define DALI_IPMIX_IPX_PLAN_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "ipx_core.cuh"

// ------------------------------------------------------------------ magnitude laws and draw slots

// Helpers of the generated laws (ipx_laws.h).

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

// ipx_op_parameters (the magnitude laws), IPX_STEP_DRAWS and IPX_U_* (the draw slots), generated
// from dali_ipmix/laws.py.
#include "ipx_laws.h"

// ------------------------------------------------------------------ generator

// SplitMix64's output function of z + golden (dali_ipmix.keys._mix).
static inline uint64_t ipx_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// A key absorbed word by word (dali_ipmix.keys._absorb): ipx_absorb(state, word).
static inline uint64_t ipx_absorb(uint64_t state, uint64_t word) { return ipx_mix64(state ^ word); }

// The uniforms of key (a, b, c) and view: keys.KeyedGenerator(keys.key_chain(a, b, c)), call view + 1.
// Unkeyed operator: (seed, batch counter, sample); keyed: (seed, sample_key, ~0).
struct IpxStream {
    uint64_t key;
};

static inline IpxStream ipx_stream(uint64_t a, uint64_t b, uint64_t c, uint64_t view) {
    uint64_t x = 0x6A09E667F3BCC908ull;
    x = ipx_absorb(x, a);
    x = ipx_absorb(x, b);
    x = ipx_absorb(x, c);
    return IpxStream{ipx_absorb(x, view + 1)};
}

// Uniform number j of the stream on [0, 1), 53 random bits (dali_ipmix.keys.uniforms).
static inline double ipx_u(const IpxStream& r, long long j) {
    return (double)(ipx_absorb(r.key, (uint64_t)j) >> 11) * 0x1.0p-53;
}

// Uniform integer in [low, high] (inclusive), as plan.draw_plan: low + floor(U * (high - low + 1)).
static inline int ipx_uniform_int(double u, int low, int high) {
    return low + (int)floor(u * (double)(high - low + 1));
}

// P = (1 - U)^(1/beta): Beta(beta, 1) is P, Beta(1, beta) is 1 - P.
static inline double ipx_beta_power(double u, double beta) { return pow(1.0 - u, 1.0 / beta); }

// ------------------------------------------------------------------ config and draws

// Chain kinds an engine draws (dali_ipmix.config.CHAIN_KINDS; the operator's `chain_kinds`).
#define IPX_KINDS_BOTH 0
#define IPX_KINDS_IMAGE 1
#define IPX_KINDS_PATCH 2

// The engine's knobs the operator draws with (dali_ipmix.config.Engine: IPMix, AugMix and PixMix
// are values of it; the defaults are IPMix's).
struct IpxConfig {
    int k = 3, t = 3;
    double beta = 4.0, severity = 1.0;
    std::vector<int> patch_sizes;       // candidate patch edges, pixels (>= 2)
    bool whole_image_patch = true;      // also the image's shorter side
    std::vector<int> op_codes;          // image-level ops drawn from (law codes); draws index this list
    bool source_from_image = true;
    int min_ops = 0;                    // a chain's op count is uniform in min_ops..t
    int chain_kinds = IPX_KINDS_BOTH;   // IPX_KINDS_*
    int pixel_ops = IPX_NUM_PIXEL_OPS;  // the first this many pixel-level ops are drawn
    bool whole_image_only = false;      // every patch is the whole image (top = left = 0, h x w)
    bool final_blend = true;            // m ~ Beta(1, 1); false: m = 1
    bool chain_start = false;           // a chain starts (prob. 1/2) from A(x): IPX_START_DRAWS per chain
    int steps() const { return t > 0 ? t : 1; }   // t = 0 keeps one (inactive) step, as draw_plan
    // Plan-table rows per chain (IPMixPlan.table_steps): the steps, plus the start row first.
    int table_steps() const { return steps() + (chain_start ? 1 : 0); }
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

// Uniforms per sample and view (dali_ipmix.laws.plan_draws).
static inline long long ipx_plan_draws(const IpxConfig& cfg) {
    return 3LL * cfg.k + 1 + (long long)cfg.k * cfg.steps() * IPX_STEP_DRAWS +
           (cfg.chain_start ? (long long)cfg.k * IPX_START_DRAWS : 0);
}

// Doubles per step in the plan record (ipx_write_plan), in this order; dali_ipmix.native mirrors it.
#define IPX_PLAN_STEP_FIELDS 17
// Doubles per chain after the steps, with a chain start: start, start op, level, sign.
#define IPX_PLAN_START_FIELDS 4

// A chain's start (IpxConfig::chain_start): whether it starts from A(x), and that op.
struct IpxDrawStart {
    int start = 0;
    int op = 0;        // index into IpxConfig::op_codes
    double level = 0.0;
    int sign = 1;
};

struct IpxDraw {
    std::vector<double> weights;   // k
    double m = 0.0;
    std::vector<int> kind, n_ops;  // k each
    std::vector<IpxDrawStep> steps;   // k * cfg.steps(), chain-major
    std::vector<IpxDrawStart> starts;   // k (all "no start" without a chain start)
};

// Draws one sample's plan for an h x w image from its stream. `sizes` is ipx_patch_sizes_for(cfg, h,
// w), not empty. Slots: weights (k), m, kinds (k), op counts (k), then IPX_STEP_DRAWS per step, then
// (chain start) IPX_START_DRAWS per chain.
static inline void ipx_draw_sample(const IpxConfig& cfg, const std::vector<int>& sizes, int h, int w,
                                   const IpxStream& r, IpxDraw* d) {
    int k = cfg.k, tt = cfg.steps();
    int n_ops = (int)cfg.op_codes.size(), n_sizes = (int)sizes.size();
    d->weights.assign(k, 1.0);
    if (k > 1) {   // Dirichlet(1, ..., 1): normalised Exp(1) draws, summed in chain order
        double sum = 0.0;
        for (int c = 0; c < k; ++c) sum = sum + (d->weights[c] = -log(1.0 - ipx_u(r, c)));
        for (int c = 0; c < k; ++c) d->weights[c] = d->weights[c] / sum;
    }
    d->m = cfg.final_blend ? ipx_u(r, k) : 1.0;   // Beta(1, 1), or no blend: the mix itself
    const int kind_lo = cfg.chain_kinds == IPX_KINDS_PATCH ? 1 : 0;
    const int kind_hi = cfg.chain_kinds == IPX_KINDS_IMAGE ? 0 : 1;
    d->kind.resize(k);
    d->n_ops.resize(k);
    for (int c = 0; c < k; ++c) {
        d->kind[c] = ipx_uniform_int(ipx_u(r, k + 1 + c), kind_lo, kind_hi);
        d->n_ops[c] = ipx_uniform_int(ipx_u(r, 2 * k + 1 + c), cfg.min_ops, cfg.t);
    }
    d->steps.resize((size_t)k * tt);
    long long base = 3LL * k + 1;
    for (IpxDrawStep& e : d->steps) {
        double u[IPX_STEP_DRAWS];
        for (int i = 0; i < IPX_STEP_DRAWS; ++i) u[i] = ipx_u(r, base + i);
        base += IPX_STEP_DRAWS;
        e.op = ipx_uniform_int(u[IPX_U_OP], 0, n_ops - 1);
        e.level = 0.1 + (cfg.severity - 0.1) * u[IPX_U_LEVEL];
        e.sign = u[IPX_U_SIGN] < 0.5 ? -1 : 1;
        e.size = sizes[ipx_uniform_int(u[IPX_U_SIZE], 0, n_sizes - 1)];
        bool square = u[IPX_U_SQUARE] < 0.5;
        e.width = square ? e.size : ipx_uniform_int(u[IPX_U_RECT_W], 2, e.size);
        e.height = square ? e.size : ipx_uniform_int(u[IPX_U_RECT_H], 2, e.size);
        e.left = ipx_uniform_int(u[IPX_U_LEFT], 0, w - e.size);
        e.top = ipx_uniform_int(u[IPX_U_TOP], 0, h - e.size);
        if (cfg.whole_image_only) {   // the patch is the whole image
            e.size = h < w ? h : w;
            e.height = h;
            e.width = w;
            e.top = e.left = 0;
        }
        e.pixel_op = ipx_uniform_int(u[IPX_U_PIXEL_OP], 0, cfg.pixel_ops - 1);
        // get_ab(beta): (Beta(beta, 1), Beta(1, beta)) or (1 + Beta(1, beta), -Beta(1, beta))
        double pa = ipx_beta_power(u[IPX_U_WA], cfg.beta), pb = ipx_beta_power(u[IPX_U_WB], cfg.beta);
        if (u[IPX_U_AB] < 0.5) {
            e.wa = pa;
            e.wb = 1.0 - pb;
        } else {
            e.wa = 1.0 + (1.0 - pa);
            e.wb = -(1.0 - pb);
        }
        e.p = u[IPX_U_P];
        e.mask_key = (uint32_t)(u[IPX_U_MASK_KEY] * 4294967296.0);
        e.from_image = (u[IPX_U_FROM_IMAGE] < 0.5) && cfg.source_from_image;
        e.src_op = ipx_uniform_int(u[IPX_U_SRC_OP], 0, n_ops - 1);
        e.src_level = 0.1 + (cfg.severity - 0.1) * u[IPX_U_SRC_LEVEL];
        e.src_sign = u[IPX_U_SRC_SIGN] < 0.5 ? -1 : 1;
    }
    d->starts.assign(k, IpxDrawStart{});
    if (cfg.chain_start) {   // per chain, after every other draw
        for (IpxDrawStart& s : d->starts) {
            double u[IPX_START_DRAWS];
            for (int i = 0; i < IPX_START_DRAWS; ++i) u[i] = ipx_u(r, base + i);
            base += IPX_START_DRAWS;
            s.start = u[IPX_U_START] < 0.5;
            s.op = ipx_uniform_int(u[IPX_U_START_OP], 0, n_ops - 1);
            s.level = 0.1 + (cfg.severity - 0.1) * u[IPX_U_START_LEVEL];
            s.sign = u[IPX_U_START_SIGN] < 0.5 ? -1 : 1;
        }
    }
}

// Doubles in one sample's plan record: weights (k), m, kind (k), n_ops (k), then k * steps() steps
// of IPX_PLAN_STEP_FIELDS, then (chain start) k starts of IPX_PLAN_START_FIELDS.
static inline long long ipx_plan_doubles(const IpxConfig& cfg) {
    return 1 + 3LL * cfg.k + (long long)cfg.k * cfg.steps() * IPX_PLAN_STEP_FIELDS +
           (cfg.chain_start ? (long long)cfg.k * IPX_PLAN_START_FIELDS : 0);
}

static inline void ipx_write_plan(const IpxConfig& cfg, const IpxDraw& d, double* out) {
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
    if (!cfg.chain_start) return;
    for (const IpxDrawStart& s : d.starts) {
        const double f[IPX_PLAN_START_FIELDS] = {(double)s.start, (double)s.op, s.level, (double)s.sign};
        memcpy(out, f, sizeof(f));
        out += IPX_PLAN_START_FIELDS;
    }
}

// An image-level op of the plan (index `op` into cfg.op_codes) as a table row's kernel op code and
// parameters: the law's parameters, run by the law's kernel (ipx_kernel_op).
static inline int ipx_image_row(const IpxConfig& cfg, int op, double level, int sign, int h, int w,
                                float* p, int* cut) {
    const int law = cfg.op_codes[op];
    ipx_op_parameters(law, level, sign, h, w, p, cut);
    return ipx_kernel_op(law);
}

// The sample's plan-table rows (k * cfg.table_steps() IpxStep, chain-major: with a chain start, the
// chain's start row first) and its mix row (m, w_0..w_k-1), as table.pack_plan writes them.
static inline void ipx_pack_sample(const IpxConfig& cfg, const IpxDraw& d, int h, int w, IpxStep* rows,
                                   float* mixw) {
    int k = cfg.k, tt = cfg.steps(), rows_per_chain = cfg.table_steps();
    for (int c = 0; c < k; ++c) {
        IpxStep* chain = rows + (size_t)c * rows_per_chain;
        if (cfg.chain_start) {   // A(x), an image-level step on x, or nothing
            const IpxDrawStart& st = d.starts[c];
            memset(chain, 0, sizeof(*chain));
            chain->src_op = IPX_NO_OP;
            chain->act = st.start ? IPX_ACT_IMAGE : IPX_ACT_NONE;
            if (st.start) chain->op = ipx_image_row(cfg, st.op, st.level, st.sign, h, w, chain->p, &chain->cut);
            ++chain;
        }
        for (int j = 0; j < tt; ++j) {
            const IpxDrawStep& e = d.steps[(size_t)c * tt + j];
            IpxStep& s = chain[j];
            memset(&s, 0, sizeof(s));
            s.src_op = IPX_NO_OP;
            s.act = j < d.n_ops[c] ? (d.kind[c] == 0 ? IPX_ACT_IMAGE : IPX_ACT_PATCH) : IPX_ACT_NONE;
            if (s.act == IPX_ACT_IMAGE) {
                s.op = ipx_image_row(cfg, e.op, e.level, e.sign, h, w, s.p, &s.cut);
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
                if (e.from_image)
                    s.src_op = ipx_image_row(cfg, e.src_op, e.src_level, e.src_sign, h, w, s.s, &s.src_cut);
            }
        }
    }
    mixw[0] = (float)d.m;
    for (int c = 0; c < k; ++c) mixw[1 + c] = (float)d.weights[c];
}

#endif  // DALI_IPMIX_IPX_PLAN_H
