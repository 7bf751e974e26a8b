/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's chart of the timeline (--plot FILE.svg or FILE.png), drawn
 * with cairo.
 *
 * Left axis: the data that remains to send.  Right axis: the bandwidth and
 * the dirty rate.  Both axes get "nice" ticks (1, 2, 2.5 or 5 times a
 * power of ten) and share the same gridlines: the left axis picks its
 * step, the right axis then picks the smallest nice step that covers its
 * maximum in the same number of intervals.  The time axis gets its own
 * nice step.
 *
 * Events: a dashed line where each pass over RAM ends (a sync), one where
 * postcopy begins, and a shaded band for the guest's pause (from the
 * pause for the downtime the statistics report).  Their labels go in a
 * band of two rows above the plot, each placed where it overlaps neither
 * another label nor the chart's edges, or left out; the legend is a row
 * below the time axis.  So no label ever covers another or the data.
 *
 * The dirty rate is what the migration measured at each sync, for the
 * period since the last one: in real mode nothing is known before the
 * first pass ends, so the line starts there (a dot marks each new
 * measurement) instead of lying at 0.  Model mode knows its guest's write
 * rate from the start.
 */
#include <math.h>
#include <string.h>

#include <cairo-svg.h>
#include <cairo.h>

#include <migram/migram.h>

#include "sim.h"

#define W 960.0
#define H 520.0
#define ML 84.0  /* left margin: tick labels and the axis title */
#define MR 96.0  /* right margin */
#define MT 76.0  /* top: title, then two rows of event labels */
#define MB 84.0  /* bottom: tick labels, axis title, legend */
#define ROW 15.0 /* an event label row */
#define FONT 12.0

#define PX(c, t) (ML + (t) / (c)->t_top * (W - ML - MR))
#define PY(top, v) (H - MB - (v) / (top) * (H - MT - MB))

typedef struct {
	double r, g, b;
} Rgb;

static const Rgb C_REMAINING = { 0.12, 0.35, 0.75 };
static const Rgb C_BANDWIDTH = { 0.15, 0.55, 0.2 };
static const Rgb C_DIRTY = { 0.82, 0.2, 0.15 };
static const Rgb C_EVENT = { 0.45, 0.45, 0.45 };
static const Rgb C_PAUSE = { 0.96, 0.78, 0.45 };

/* A label already placed: nothing else may overlap it. */
typedef struct {
	double x0, y0, x1, y1;
} Box;

typedef struct {
	cairo_t *cr;
	const SimReport *r;
	double t_top, t_step;       /* time axis, s */
	double rem_top, rem_step;   /* left axis, in rem_unit */
	double rate_top, rate_step; /* right axis, in rate_unit */
	int intervals;              /* of both y axes */
	double rem_unit, rate_unit; /* bytes per axis unit */
	const char *rem_name, *rate_name;
	Box boxes[64];
	int nboxes;
} Chart;

/* The smallest 1, 2, 2.5 or 5 times a power of ten that is >= v. */
static double nice_ceil(double v)
{
	static const double m[] = { 1, 2, 2.5, 5, 10 };
	double p;

	if (!(v > 0))
		return 1;
	p = pow(10, floor(log10(v)));
	for (unsigned int i = 0; i < G_N_ELEMENTS(m); i++)
		if (m[i] * p >= v * (1 - 1e-9))
			return m[i] * p;
	return 10 * p;
}

/* Bytes -> the unit that keeps the axis's numbers small. */
static void pick_unit(double max_bytes, double *unit, const char **name,
		      bool rate)
{
	static const char *const names[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	static const char *const rates[] = { "B/s", "KiB/s", "MiB/s", "GiB/s",
					     "TiB/s" };
	int u = 2;

	*unit = 1 << 20; /* MiB at least: a short run's axis reads 0.2 MiB */
	while (max_bytes / *unit >= 2048 && u < 4) {
		*unit *= 1024;
		u++;
	}
	*name = rate ? rates[u] : names[u];
}

static void set_rgb(cairo_t *cr, Rgb c)
{
	cairo_set_source_rgb(cr, c.r, c.g, c.b);
}

/* The tick value with as many decimals as its step needs. */
static void tick_text(char *buf, size_t n, double v, double step,
		      const char *unit)
{
	int decimals = 0;

	while (decimals < 4 && fabs(step * pow(10, decimals) -
				    round(step * pow(10, decimals))) > 1e-6)
		decimals++;
	g_snprintf(buf, n, "%.*f%s%s", decimals, v, unit[0] ? " " : "", unit);
}

/* Text anchored at x: align -1 left of x, 0 centred, 1 right of x. */
static void text_at(cairo_t *cr, double x, double y, int align,
		    const char *text)
{
	cairo_text_extents_t e;

	cairo_text_extents(cr, text, &e);
	cairo_move_to(cr,
		      align < 0   ? x - e.x_advance
		      : align > 0 ? x
				  : x - e.x_advance / 2,
		      y);
	cairo_show_text(cr, text);
}

static void scan(Chart *c)
{
	const SimReport *r = c->r;
	double tmax = 0, rmax = 0, ratemax = 0, pause_end;

	for (guint i = 0; i < r->timeline->len; i++) {
		const SimSample *s = &g_array_index(r->timeline, SimSample, i);

		tmax = MAX(tmax, s->t);
		rmax = MAX(rmax, (double)s->remaining_pages * 4096);
		ratemax = MAX(ratemax, s->bandwidth);
		if (s->dirty_rate_known)
			ratemax = MAX(ratemax, (double)s->dirty_rate);
	}
	pause_end = r->pause_at + (double)r->downtime_ms / 1000;
	if (r->pause_at >= 0)
		tmax = MAX(tmax, pause_end);
	c->t_step = nice_ceil(MAX(tmax, 0.1) / 8);
	c->t_top = ceil(MAX(tmax, 0.1) / c->t_step - 1e-9) * c->t_step;

	/* 3 % headroom: the maximum never sits on the frame */
	rmax *= 1.03;
	ratemax *= 1.03;
	pick_unit(rmax, &c->rem_unit, &c->rem_name, false);
	pick_unit(ratemax, &c->rate_unit, &c->rate_name, true);
	/* 4 to 7 intervals, whichever makes the tightest axis */
	c->rem_top = G_MAXDOUBLE;
	for (int n = 4; n <= 7; n++) {
		double v = MAX(rmax / c->rem_unit, 0.5);
		double step = nice_ceil(v / n);
		int k = (int)ceil(v / step - 1e-9);

		if (step * k < c->rem_top - 1e-9) {
			c->rem_step = step;
			c->intervals = MAX(k, 2);
			c->rem_top = step * c->intervals;
		}
	}
	c->rate_step =
		nice_ceil(MAX(ratemax / c->rate_unit, 0.5) / c->intervals);
	c->rate_top = c->rate_step * c->intervals;
}

/* Gridlines, the frame, and the labelled ticks of all three axes. */
static void axes(Chart *c)
{
	cairo_t *cr = c->cr;
	char buf[48];

	cairo_set_line_width(cr, 1);
	cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
	for (int i = 1; i < c->intervals; i++) {
		double y = round(PY((double)c->intervals, i)) + 0.5;

		cairo_move_to(cr, ML, y);
		cairo_line_to(cr, W - MR, y);
	}
	for (double t = c->t_step; t < c->t_top - 1e-9; t += c->t_step) {
		double x = round(PX(c, t)) + 0.5;

		cairo_move_to(cr, x, MT);
		cairo_line_to(cr, x, H - MB);
	}
	cairo_stroke(cr);

	cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
	cairo_rectangle(cr, ML + 0.5, MT + 0.5, W - ML - MR - 1, H - MT - MB);
	cairo_stroke(cr);
	for (int i = 0; i <= c->intervals; i++) {
		double y = PY((double)c->intervals, i);

		set_rgb(cr, C_REMAINING);
		tick_text(buf, sizeof(buf), c->rem_step * i, c->rem_step,
			  c->rem_name);
		text_at(cr, ML - 6, y + 4, -1, buf);
		set_rgb(cr, C_BANDWIDTH);
		tick_text(buf, sizeof(buf), c->rate_step * i, c->rate_step,
			  c->rate_name);
		text_at(cr, W - MR + 6, y + 4, 1, buf);
	}
	cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
	for (int i = 0; i * c->t_step <= c->t_top + 1e-9; i++) {
		double t = i * c->t_step;

		tick_text(buf, sizeof(buf), t, c->t_step, "");
		text_at(cr, PX(c, t), H - MB + 16, 0, buf);
	}
	text_at(cr, (ML + W - MR) / 2, H - MB + 34, 0, "time (s)");
}

/*
 * Reserve a box, unless it leaves the plot's width (the axes' labels are
 * beside it) or overlaps one reserved.
 */
static bool reserve(Chart *c, Box b)
{
	if (b.x0 < ML || b.x1 > W - MR || c->nboxes == G_N_ELEMENTS(c->boxes))
		return false;
	for (int i = 0; i < c->nboxes; i++) {
		const Box *o = &c->boxes[i];

		if (b.x0 < o->x1 + 6 && o->x0 < b.x1 + 6 && b.y0 < o->y1 &&
		    o->y0 < b.y1)
			return false;
	}
	c->boxes[c->nboxes++] = b;
	return true;
}

/* An event's label above the plot, beside x: first free of four spots. */
static void event_label(Chart *c, double x, const char *text)
{
	cairo_text_extents_t e;

	cairo_text_extents(c->cr, text, &e);
	for (int row = 0; row < 2; row++) {
		double base = MT - 6 - row * ROW;

		for (int side = 0; side < 2; side++) {
			double x0 = side ? x - 3 - e.x_advance : x + 3;
			Box b = { x0, base - FONT, x0 + e.x_advance, base + 3 };

			if (reserve(c, b)) {
				cairo_move_to(c->cr, x0, base);
				cairo_show_text(c->cr, text);
				return;
			}
		}
	}
}

static void vline(Chart *c, double t, bool dashed)
{
	const double dash[] = { 4, 3 };
	double x = round(PX(c, t)) + 0.5;

	cairo_set_dash(c->cr, dash, dashed ? 2 : 0, 0);
	cairo_move_to(c->cr, x, MT - 4);
	cairo_line_to(c->cr, x, H - MB);
	cairo_stroke(c->cr);
	cairo_set_dash(c->cr, NULL, 0, 0);
}

/* The pause band, the pass boundaries and the switch to postcopy. */
static void events(Chart *c)
{
	const SimReport *r = c->r;
	cairo_t *cr = c->cr;
	double pause_end = r->pause_at + (double)r->downtime_ms / 1000;
	uint64_t pass = 0;
	bool postcopy = false;
	char buf[64];

	if (r->pause_at >= 0) {
		double x0 = PX(c, r->pause_at);
		double x1 = PX(c, pause_end);

		x1 = MAX(x1, x0 + 2);
		cairo_set_source_rgba(cr, C_PAUSE.r, C_PAUSE.g, C_PAUSE.b,
				      0.55);
		cairo_rectangle(cr, x0, MT + 1, x1 - x0, H - MT - MB - 1);
		cairo_fill(cr);
		cairo_set_source_rgb(cr, 0.6, 0.4, 0.1);
		g_snprintf(buf, sizeof(buf),
			   "guest paused (%" G_GUINT64_FORMAT " ms)",
			   r->downtime_ms);
		event_label(c, x0, buf);
	}
	cairo_set_line_width(cr, 1);
	set_rgb(cr, C_EVENT);
	if (r->timeline->len &&
	    !g_array_index(r->timeline, SimSample, 0).postcopy)
		event_label(c, ML, "pass 1");
	for (guint i = 0; i < r->timeline->len; i++) {
		const SimSample *s = &g_array_index(r->timeline, SimSample, i);

		/* the final sync, at the pause, is the pause band's */
		bool final = r->pause_at >= 0 && s->t >= r->pause_at;

		set_rgb(cr, C_EVENT);
		if (s->pass > pass && !final && !s->postcopy) {
			vline(c, s->t, true);
			g_snprintf(buf, sizeof(buf), "pass %" G_GUINT64_FORMAT,
				   s->pass + 1);
			event_label(c, PX(c, s->t), buf);
		}
		pass = s->pass;
		if (s->postcopy && !postcopy) {
			/* the switch is the pause's end, when it is known */
			double t = r->pause_at >= 0 ? pause_end : s->t;

			vline(c, t, false);
			event_label(c, PX(c, t), "postcopy");
			postcopy = true;
		}
	}
}

static double y_remaining(const Chart *c, const SimSample *s)
{
	return PY(c->rem_top, (double)s->remaining_pages * 4096 / c->rem_unit);
}

static void series(Chart *c)
{
	const GArray *tl = c->r->timeline;
	cairo_t *cr = c->cr;
	bool started = false;
	uint64_t last = 0;

	if (!tl->len)
		return;
	/* remaining: a line over a light area */
	cairo_move_to(cr, PX(c, g_array_index(tl, SimSample, 0).t), H - MB);
	for (guint i = 0; i < tl->len; i++) {
		const SimSample *s = &g_array_index(tl, SimSample, i);

		cairo_line_to(cr, PX(c, s->t), y_remaining(c, s));
	}
	cairo_line_to(cr, PX(c, g_array_index(tl, SimSample, tl->len - 1).t),
		      H - MB);
	cairo_close_path(cr);
	cairo_set_source_rgba(cr, C_REMAINING.r, C_REMAINING.g, C_REMAINING.b,
			      0.08);
	cairo_fill(cr);
	cairo_set_line_width(cr, 2);
	cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
	for (guint i = 0; i < tl->len; i++) {
		const SimSample *s = &g_array_index(tl, SimSample, i);

		cairo_line_to(cr, PX(c, s->t), y_remaining(c, s));
	}
	set_rgb(cr, C_REMAINING);
	cairo_stroke(cr);

	for (guint i = 0; i < tl->len; i++) {
		const SimSample *s = &g_array_index(tl, SimSample, i);

		cairo_line_to(cr, PX(c, s->t),
			      PY(c->rate_top, s->bandwidth / c->rate_unit));
	}
	set_rgb(cr, C_BANDWIDTH);
	cairo_stroke(cr);

	/* the dirty rate, from its first measurement on */
	set_rgb(cr, C_DIRTY);
	for (guint i = 0; i < tl->len; i++) {
		const SimSample *s = &g_array_index(tl, SimSample, i);
		double x = PX(c, s->t);
		double y = PY(c->rate_top,
			      (double)s->dirty_rate / c->rate_unit);

		if (!s->dirty_rate_known)
			continue;
		if (started)
			cairo_line_to(cr, x, y);
		else
			cairo_move_to(cr, x, y);
		started = true;
		if (!c->r->model && s->dirty_rate != last) {
			cairo_stroke(cr);
			cairo_arc(cr, x, y, 3, 0, 2 * G_PI);
			cairo_fill(cr);
			cairo_move_to(cr, x, y);
		}
		last = s->dirty_rate;
	}
	cairo_stroke(cr);
}

/* A legend entry's swatch: 0 a line, 1 a dashed line, 2 a band. */
typedef struct {
	int kind;
	Rgb col;
	const char *text;
} LegendItem;

static double legend_width(cairo_t *cr, const LegendItem *it)
{
	cairo_text_extents_t e;

	cairo_text_extents(cr, it->text, &e);
	return 23 + e.x_advance;
}

static void legend_item(cairo_t *cr, double x, double y, const LegendItem *it)
{
	if (it->kind == 2) {
		cairo_set_source_rgba(cr, it->col.r, it->col.g, it->col.b,
				      0.55);
		cairo_rectangle(cr, x, y - 9, 18, 11);
		cairo_fill(cr);
	} else {
		const double dash[] = { 4, 3 };

		set_rgb(cr, it->col);
		cairo_set_line_width(cr, it->kind ? 1 : 2);
		cairo_set_dash(cr, dash, it->kind ? 2 : 0, 0);
		cairo_move_to(cr, x, y - 4);
		cairo_line_to(cr, x + 18, y - 4);
		cairo_stroke(cr);
		cairo_set_dash(cr, NULL, 0, 0);
	}
	cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
	cairo_move_to(cr, x + 23, y);
	cairo_show_text(cr, it->text);
}

/* The legend: rows below the time axis, wrapped so that nothing is cut. */
static void legend(Chart *c)
{
	const GArray *tl = c->r->timeline;
	bool postcopy = tl->len &&
			g_array_index(tl, SimSample, tl->len - 1).postcopy;
	const LegendItem items[] = {
		{ 0, C_REMAINING, "remaining (left axis)" },
		{ 0, C_BANDWIDTH, "bandwidth (right)" },
		{ 0, C_DIRTY,
		  c->r->model ? "dirty rate (right)"
			      : "dirty rate (right), measured at each sync" },
		{ 1, C_EVENT, "end of a pass" },
		{ 0, C_EVENT, postcopy ? "postcopy begins" : NULL },
		{ 2, C_PAUSE, "guest paused" },
	};
	double x = ML, y = H - 30;

	for (unsigned int i = 0; i < G_N_ELEMENTS(items); i++) {
		double w;

		if (!items[i].text)
			continue;
		w = legend_width(c->cr, &items[i]);
		if (x > ML && x + w > W - 8) {
			x = ML;
			y += 16;
		}
		legend_item(c->cr, x, y, &items[i]);
		x += w + 18;
	}
}

static void draw(cairo_t *cr, const SimReport *r)
{
	Chart c = { .cr = cr, .r = r };
	char buf[128];

	scan(&c);
	cairo_set_source_rgb(cr, 1, 1, 1);
	cairo_paint(cr);
	cairo_select_font_face(cr, "sans", CAIRO_FONT_SLANT_NORMAL,
			       CAIRO_FONT_WEIGHT_NORMAL);
	cairo_set_font_size(cr, FONT);
	axes(&c);
	events(&c);
	series(&c);
	legend(&c);
	cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
	g_snprintf(buf, sizeof(buf), "migram-sim: %s, %s%s%s", r->status,
		   r->model ? "model (virtual time)" : "real",
		   r->mode_name[0] ? ", " : "", r->mode_name);
	cairo_set_font_size(cr, FONT + 2);
	cairo_move_to(cr, ML, 22);
	cairo_show_text(cr, buf);
	cairo_set_font_size(cr, FONT);
}

bool sim_report_write_plot(const SimReport *r, const char *path, GError **error)
{
	bool png = g_str_has_suffix(path, ".png");
	cairo_surface_t *s = png ? cairo_image_surface_create(
					   CAIRO_FORMAT_RGB24, (int)W, (int)H)
				 : cairo_svg_surface_create(path, W, H);
	cairo_t *cr = cairo_create(s);
	cairo_status_t st;

	draw(cr, r);
	cairo_destroy(cr);
	st = png ? cairo_surface_write_to_png(s, path) : CAIRO_STATUS_SUCCESS;
	cairo_surface_finish(s);
	if (st == CAIRO_STATUS_SUCCESS)
		st = cairo_surface_status(s);
	cairo_surface_destroy(s);
	if (st != CAIRO_STATUS_SUCCESS) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "chart %s: %s", path, cairo_status_to_string(st));
		return false;
	}
	return true;
}
