/*
 * knn_floor.c
 *	  Exact k-nearest-neighbour scan in plain C over vectors in memory: the
 *	  floor that an SQL sequential scan over the same data is compared with.
 *
 * Usage: knn_floor DATA QUERIES K REPEAT
 *   DATA, QUERIES: text files, one vector per line as "[x1,...,xd]".
 * Prints the mean milliseconds per query and a checksum of the result ids
 * (1-based line numbers) so the SQL run can be checked against it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "latent/distance.h"
#include "latent/latent_parse.h"

#define MAX_DIM 16000

static float *
read_vectors(const char *path, int *n, int *d)
{
	FILE	   *f = fopen(path, "r");
	char	   *line = NULL;
	size_t		cap = 0;
	float		buf[MAX_DIM];
	float	   *all = NULL;
	int			count = 0;
	int			alloc = 0;

	if (!f)
	{
		perror(path);
		exit(2);
	}
	*d = 0;
	while (getline(&line, &cap, f) > 0)
	{
		int			dim;
		int			pos;
		int			len;
		uint32_t	fp;

		line[strcspn(line, "\n")] = '\0';
		if (latent_parse(line, buf, MAX_DIM, &dim, &fp, &pos, &len) != LATENT_PARSE_OK)
		{
			fprintf(stderr, "%s: bad vector on line %d\n", path, count + 1);
			exit(2);
		}
		if (*d == 0)
			*d = dim;
		if (count == alloc)
		{
			alloc = alloc ? alloc * 2 : 1024;
			all = realloc(all, sizeof(float) * (size_t) alloc * dim);
		}
		memcpy(all + (size_t) count * dim, buf, sizeof(float) * dim);
		count++;
	}
	free(line);
	fclose(f);
	*n = count;
	return all;
}

int
main(int argc, char **argv)
{
	int			n;
	int			d;
	int			nq;
	int			dq;
	int			k;
	int			repeat;
	float	   *data;
	float	   *queries;
	struct timespec t0;
	struct timespec t1;
	long long	checksum = 0;
	double		ms;

	if (argc != 5)
	{
		fprintf(stderr, "usage: knn_floor DATA QUERIES K REPEAT\n");
		return 2;
	}
	data = read_vectors(argv[1], &n, &d);
	queries = read_vectors(argv[2], &nq, &dq);
	k = atoi(argv[3]);
	repeat = atoi(argv[4]);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int r = 0; r < repeat; r++)
		for (int q = 0; q < nq; q++)
		{
			double		best[64];
			int			ids[64];
			int			have = 0;

			/* insertion into a sorted top-k list, as a heap would do for small k */
			for (int i = 0; i < n; i++)
			{
				double		dist = latent_l2_squared(queries + (size_t) q * d,
													 data + (size_t) i * d, d);
				int			j;

				if (have == k && dist >= best[k - 1])
					continue;
				j = have < k ? have++ : k - 1;
				while (j > 0 && best[j - 1] > dist)
				{
					best[j] = best[j - 1];
					ids[j] = ids[j - 1];
					j--;
				}
				best[j] = dist;
				ids[j] = i + 1;
			}
			if (r == 0)
				for (int j = 0; j < have; j++)
					checksum += (long long) ids[j] * (j + 1);
		}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = ((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6) / ((double) repeat * nq);
	printf("c_loop_ms_per_query %.4f\nchecksum %lld\n", ms, checksum);
	free(data);
	free(queries);
	return 0;
}
