"""The RabbitMQ adapter: a supervised connection that runs its users as session hooks,
the topology declarer, and the seams over aiormq's and pamqp's internals.
"""
