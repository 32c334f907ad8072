"""Running a recipe's stages.

What a stage is (:mod:`.stage`), how its cache key is made (:mod:`.cache`), the explicit stage list
(:mod:`.stages`), the build that runs it and publishes the release (:mod:`.build`), and the launch of a training
stage as DDP processes under torchrun (:mod:`.launch`, for ``factory build --nproc N``).

``stage`` and ``cache`` sit below every stage module (they import only the recipe and the runtime layer);
``stages`` and ``build`` sit above all of them.
"""
