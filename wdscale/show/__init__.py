"""Floor 5, what people see: figures (plots, data in, figure out), exports, the tour, and the app's side (jobs,
the training child process, the Train page's plans).  Never imports streamlit; pages/ call it.
"""
