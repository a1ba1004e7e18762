"""Input pipeline (TensorFlow / tf.data): preprocessing language, sources, iterators, LM packing.

Importing `siglip_rins.data.pp` registers all ops (image, text, common).
"""
