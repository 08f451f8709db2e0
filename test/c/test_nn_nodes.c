/*
 * test_nn_nodes.c
 *	  Run ONNX's backend node tests (Debian package libonnx-testdata) through
 *	  the runtime and compare with the stored outputs.
 *
 * Every directory under data/node and data/pytorch-converted is tried.  A
 * test is selected when its model loads and plans: a model that uses an
 * operator, attribute or type the runtime does not support is reported as
 * "skip NAME: reason" and counted neither way.  Any other failure (a crash
 * aside) counts as FAIL.  Input 0 is fed at run time.  The other inputs
 * are bound as plan-time constants, the way weights arrive in real models,
 * and so are integer inputs such as indices.
 * Outputs must match within rtol 1e-4 and atol 1e-5 (integers exactly).
 */
#include "nn/nn_int.h"
#include "wdc_test.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TESTDATA "/usr/share/libonnx-testdata/data"
#define MAX_IO 16

static int	n_skipped;

/* Read a whole file; NULL when missing. */
static unsigned char *
read_file(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	unsigned char *buf;
	long		n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n > 0 ? n : 1);
	if (buf && fread(buf, 1, n, f) != (size_t) n)
	{
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*len = (size_t) n;
	return buf;
}

typedef struct Tensor
{
	int			elem;
	NnShape		shape;
	void	   *data;
} Tensor;

/* Read a TensorProto file into float32 or int64 data. */
static int
read_tensor(const WdcEnv *env, const char *path, Tensor *t)
{
	size_t		len;
	unsigned char *buf = read_file(path, &len);
	Onnx__TensorProto *tp;
	WdcStatus	st;

	if (buf == NULL)
		return 0;
	tp = onnx__tensor_proto__unpack(NULL, len, buf);
	free(buf);
	if (tp == NULL)
		return -1;
	st = nn_tensor_convert(env, tp, &t->elem, &t->shape, &t->data);
	onnx__tensor_proto__free_unpacked(tp, NULL);
	return st == WDC_OK ? 1 : -1;
}

/* Compare one output; write the first mismatch into why. */
static int
compare(const Tensor *want, const WdcNnTensorInfo *got_info, const void *got,
		char *why, size_t whylen)
{
	int64_t		n = nn_numel(&want->shape);

	if (got_info->rank != want->shape.rank)
	{
		snprintf(why, whylen, "output %s has rank %d, expected %d",
				 got_info->name, got_info->rank, want->shape.rank);
		return 0;
	}
	for (int i = 0; i < want->shape.rank; i++)
		if (got_info->dims[i] != want->shape.d[i])
		{
			snprintf(why, whylen, "output %s dimension %d is %lld, expected %lld",
					 got_info->name, i, (long long) got_info->dims[i],
					 (long long) want->shape.d[i]);
			return 0;
		}
	if (got_info->elem_type != want->elem)
	{
		snprintf(why, whylen, "output %s has element type %d, expected %d",
				 got_info->name, got_info->elem_type, want->elem);
		return 0;
	}
	for (int64_t i = 0; i < n; i++)
	{
		if (want->elem == WDC_NN_INT64)
		{
			int64_t		g = ((const int64_t *) got)[i],
						w = ((const int64_t *) want->data)[i];

			if (g != w)
			{
				snprintf(why, whylen, "output %s[%lld] = %lld, expected %lld",
						 got_info->name, (long long) i, (long long) g, (long long) w);
				return 0;
			}
		}
		else
		{
			float		g = ((const float *) got)[i],
						w = ((const float *) want->data)[i];

			if (!wdc_close(g, w, 1e-4, 1e-5) && !(isinf(g) && g == w))
			{
				snprintf(why, whylen, "output %s[%lld] = %.9g, expected %.9g",
						 got_info->name, (long long) i, g, w);
				return 0;
			}
		}
	}
	return 1;
}

/* Run one data set of a loaded model; returns 1 pass, 0 fail, -1 skip. */
static int
run_data_set(const WdcEnv *env, const WdcNnModel *m, const char *dir,
			 char *why, size_t whylen)
{
	Tensor		in[MAX_IO] = {0},
				out[MAX_IO] = {0};
	WdcNnBinding bind[MAX_IO];
	const void *inputs[MAX_IO] = {0};
	void	   *outputs[MAX_IO] = {0};
	WdcNnPlanOptions opt;
	WdcNnPlan  *plan = NULL;
	int			nin = wdc_nn_input_count(m),
				nout = wdc_nn_output_count(m);
	int			result = 0;
	char		path[1024];
	WdcStatus	st;

	if (nin > MAX_IO || nout > MAX_IO)
	{
		snprintf(why, whylen, "too many inputs or outputs");
		return -1;
	}

	/* inputs: 0 at run time, the rest as constants */
	for (int i = 0; i < nin; i++)
	{
		snprintf(path, sizeof(path), "%.900s/input_%d.pb", dir, i);
		if (read_tensor(env, path, &in[i]) != 1)
		{
			snprintf(why, whylen, "cannot read %.400s", path);
			result = -1;
			goto done;
		}
		bind[i].rank = in[i].shape.rank;
		memcpy(bind[i].dims, in[i].shape.d, sizeof(int64_t) * in[i].shape.rank);
		bind[i].elem_type = in[i].elem;
		bind[i].data = (i == 0 && in[i].elem == WDC_NN_FLOAT &&
						wdc_nn_input(m, 0)->elem_type == WDC_NN_FLOAT)
			? NULL : in[i].data;
		inputs[i] = bind[i].data ? NULL : in[i].data;
	}
	for (int i = 0; i < nout; i++)
	{
		snprintf(path, sizeof(path), "%.900s/output_%d.pb", dir, i);
		if (read_tensor(env, path, &out[i]) != 1)
		{
			snprintf(why, whylen, "cannot read %.400s", path);
			result = -1;
			goto done;
		}
	}

	memset(&opt, 0, sizeof(opt));
	opt.batch = 1;
	opt.bindings = bind;
	st = wdc_nn_plan_create_ex(env, m, &opt, &plan);
	if (st != WDC_OK)
	{
		snprintf(why, whylen, "%s", env->error->message);
		result = st == WDC_ERR_UNSUPPORTED ? -1 : 0;
		goto done;
	}
	for (int i = 0; i < nout; i++)
		outputs[i] = malloc(wdc_nn_numel(wdc_nn_plan_output(plan, i)) * 8 + 8);
	st = wdc_nn_run(env, plan, inputs, outputs);
	if (st != WDC_OK)
	{
		snprintf(why, whylen, "run failed: %s", env->error->message);
		goto done;
	}
	result = 1;
	for (int i = 0; i < nout && result; i++)
		result = compare(&out[i], wdc_nn_plan_output(plan, i), outputs[i], why,
						 whylen);

done:
	wdc_nn_plan_free(env, plan);
	for (int i = 0; i < MAX_IO; i++)
	{
		free(in[i].data);
		free(out[i].data);
		free(outputs[i]);
	}
	return result;
}

static void
run_test(const WdcEnv *env, const char *suite, const char *name)
{
	char		dir[768],
				path[1024],
				why[512] = "";
	size_t		len;
	unsigned char *bytes;
	WdcNnModel *m = NULL;
	WdcStatus	st;
	int			result = 1,
				sets = 0;
	char		label[300];

	snprintf(label, sizeof(label), "%s/%s", suite, name);
	snprintf(dir, sizeof(dir), "%s/%s/%s", TESTDATA, suite, name);
	snprintf(path, sizeof(path), "%s/model.onnx", dir);
	bytes = read_file(path, &len);
	if (bytes == NULL)
		return;
	st = wdc_nn_load(env, bytes, len, &m);
	free(bytes);
	if (st != WDC_OK)
	{
		if (st == WDC_ERR_UNSUPPORTED)
		{
			printf("skip %s: %s\n", label, env->error->message);
			n_skipped++;
		}
		else
			wdc_test_case(label, 0, env->error->message);
		return;
	}
	for (int s = 0; s < 8; s++)
	{
		struct stat sb;
		int			r;

		snprintf(path, sizeof(path), "%s/test_data_set_%d", dir, s);
		if (stat(path, &sb) != 0)
			break;
		r = run_data_set(env, m, path, why, sizeof(why));
		sets++;
		if (r < 0)
		{
			printf("skip %s: %s\n", label, why);
			n_skipped++;
			result = -1;
			break;
		}
		if (r == 0)
		{
			result = 0;
			break;
		}
	}
	wdc_nn_free(env, m);
	if (result >= 0)
		wdc_test_case(label, result == 1 && sets > 0, sets ? why : "no data sets");
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static void
run_suite(const WdcEnv *env, const char *suite)
{
	char		path[512];
	DIR		   *d;
	struct dirent *e;
	char	  **names = NULL;
	size_t		n = 0,
				cap = 0;

	snprintf(path, sizeof(path), "%s/%s", TESTDATA, suite);
	d = opendir(path);
	if (d == NULL)
	{
		wdc_test_case(suite, 0, "test data directory missing (install libonnx-testdata)");
		return;
	}
	while ((e = readdir(d)) != NULL)
	{
		if (strncmp(e->d_name, "test_", 5) != 0)
			continue;
		if (n == cap)
		{
			cap = cap ? 2 * cap : 256;
			names = realloc(names, cap * sizeof(char *));
		}
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(char *), cmp_str);
	for (size_t i = 0; i < n; i++)
	{
		run_test(env, suite, names[i]);
		free(names[i]);
	}
	free(names);
}

int
main(int argc, char **argv)
{
	WdcError	err;
	WdcEnv		env;

	wdc_nn_init();
	wdc_env_init_default(&env, &err);
	if (argc > 2)
	{
		/* run a single test: test_nn_nodes SUITE NAME */
		run_test(&env, argv[1], argv[2]);
		return wdc_test_summary();
	}
	run_suite(&env, "node");
	run_suite(&env, "pytorch-converted");
	printf("%d skipped (unsupported operators or attributes)\n", n_skipped);
	return wdc_test_summary();
}
