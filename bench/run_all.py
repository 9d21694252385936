"""Run every benchmark and print its table: `make bench` (by hand; never part of the tests)."""
from bench import bench_damsm, bench_data, bench_inception, bench_train

if __name__ == "__main__":
    bench_data.main([])
    bench_damsm.main([])
    bench_train.main([])
    bench_inception.main([])
