"""The submission recipe: what it holds (`recipe.Recipe`) and the one chain that applies it
(`chain`: blend, upsample, refine, threshold, post-process), used by tuning, prediction,
the leaderboard and the benchmarks alike.
"""
